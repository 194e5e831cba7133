// Loaded before every test file (bunfig.toml): test files that import onnxruntime-node directly get
// its telemetry off too, as diffgraph's node adapter does (core/adapters/ort-telemetry-node.ts).
import { ortTelemetryOff } from "../core/adapters/ort-telemetry-node.ts";

await ortTelemetryOff();
