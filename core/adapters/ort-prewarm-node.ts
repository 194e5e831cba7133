/**
 * Worker script (Bun): creates onnxruntime-node's process-wide environment off the main thread, then
 * ends. Started by the Bun adapter (`node.ts`, `prewarm`) when a runtime that may use onnxruntime-node
 * is made, after the main thread has turned onnxruntime's telemetry off in the C environment, which
 * this thread shares.
 *
 * onnxruntime creates its environment with the first session of the process (≈ 20 ms here: its
 * kernel registries, CPU detection, logging), and every later session on any thread reuses it. Made
 * here, it overlaps the main thread's imports and pipeline opening instead of delaying the first
 * session; the library is also loaded and relocated by then, so the main thread's import is shorter.
 * A main-thread session created meanwhile waits for the environment inside onnxruntime, as it would
 * for its own. The environment takes its log level from the thread that creates it: this one's
 * onnxruntime-common `env.logLevel` (default "warning"); diffgraph sets each session's own
 * `logSeverityLevel` instead, and a program that sets `ort.env.logLevel` on the main thread turns
 * prewarming off (`prewarm: false`).
 */
export {}; // a module: top-level await

const scope = globalThis as unknown as { postMessage(m: unknown): void; close(): void };

try {
  const [ort, { probeModelBytes }] = await Promise.all([
    import("onnxruntime-node") as Promise<unknown> as Promise<{
      InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<{ release(): Promise<void> }> };
    }>,
    import("../onnx-graph.ts"),
  ]);
  // The smallest model whose session makes onnxruntime create its environment: x → Identity → y.
  const bytes = probeModelBytes();
  // One thread, no pool: the session exists only to make the environment.
  const options = { executionProviders: ["cpu"], logSeverityLevel: 3, intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: "sequential" };
  await (await ort.InferenceSession.create(bytes, options)).release();
  scope.postMessage({ ok: true });
} catch (err) {
  scope.postMessage({ ok: false, error: (err as Error)?.message ?? String(err) });
}
scope.close();
