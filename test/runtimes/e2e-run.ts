/**
 * The same end-to-end generation on whatever runtime executes this file (Bun, Node via a bundle,
 * Deno, a browser): prints one JSON line with the image, so `runtimes.test.ts` can compare runtimes.
 *   deno run -A test/runtimes/e2e-run.ts webgpu
 *   E2E_PIPELINE=pipelines/emoji-64.json E2E_INPUT='{"prompt":"red heart","seed":7,"steps":2}' node … wasm
 */
import { createDiffgraph } from "../../core/diffgraph.ts";
import type { ExecutionProvider } from "../../core/onnx.ts";
import { detectHost } from "../../core/runtime.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const g = globalThis as { Deno?: { args: string[]; env: { get(k: string): string | undefined } }; process?: { argv: string[]; env: Record<string, string | undefined> } };
const provider = ((g.Deno ? g.Deno.args[0] : g.process?.argv[2]) ?? "auto") as ExecutionProvider;
const env = (k: string) => (g.Deno ? g.Deno.env.get(k) : g.process?.env[k]);
const pipelinePath = env("E2E_PIPELINE") ?? "pipelines/tiny-sd.json";
const input = env("E2E_INPUT") ? JSON.parse(env("E2E_INPUT")!) : { prompt: "a red heart", negativePrompt: "blue", steps: 4, seed: 11, guidanceScale: 5, scheduler: "ddim" };
const logs: string[] = [];
const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: provider, log: (m) => logs.push(m) });
const pipeline = await dg.openPipeline(pipelinePath);
let steps = 0;
const t0 = performance.now();
const r = await pipeline.run(input, { onEvent: (e) => void (e.type === "step" && steps++) });
console.log(JSON.stringify({ host: detectHost(), provider, providersInUse: dg.onnx.providersInUse, steps, ms: performance.now() - t0, dims: r.images.dims, data: Array.from(r.images.data), logs }));
await dg.dispose();
