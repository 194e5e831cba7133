/**
 * Detects the host runtime and loads its adapter. Only this file knows the adapters exist; the rest
 * of the core receives a `ModelSource` and `OnnxBackends`.
 */
import { detectHost as detectHostNow, type Host, type RuntimeAdapter } from "./host.ts";

export { detectHost, type Host, type RuntimeAdapter } from "./host.ts";

export async function loadRuntimeAdapter(host: Host = detectHostNow()): Promise<RuntimeAdapter> {
  switch (host) {
    case "bun":
    case "node": {
      const m = await import("./adapters/node.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
    case "deno": {
      const m = await import("./adapters/deno.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
    case "browser": {
      const m = await import("./adapters/browser.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
  }
}
