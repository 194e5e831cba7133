/**
 * The one configuration of the README's determinism table: every runtime and provider draws this
 * and is compared with Bun + onnxruntime-node CPU (test/runtimes/runtimes.test.ts: Node, Deno;
 * test/web/local-page.test.ts: Chromium; test/web/workerd.test.ts: workerd). 2 steps, because
 * Chromium's SwiftShader WebGPU takes seconds per step.
 */
export const TABLE = {
  pipeline: "pipelines/emoji-64.json",
  pipelineName: "emoji-64",
  input: { prompt: "red heart", seed: 7, steps: 2 },
  /** Max |Δ| per pixel (images in [0, 1]) allowed against Bun/CPU. */
  bound: 1e-3,
} as const;

/** One line per row, grep-able from the test log: `determinism: chromium/webgpu 4.86e-6`. */
export function reportRow(runtime: string, provider: string, maxDiff: number, msPerStep?: number): void {
  console.log(`determinism: ${runtime}/${provider} max |Δ| vs Bun/CPU ${maxDiff.toExponential(2)}${msPerStep !== undefined ? `, ${msPerStep.toFixed(1)} ms/step (one cold run: includes session creation and shader compilation)` : ""}`);
}
