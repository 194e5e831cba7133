/**
 * Can two onnxruntime-node sessions be created at once? `bench/overhead.ts` (e) spawns this script in
 * three modes, each a fresh process that first creates the text encoder's session (so onnxruntime's
 * environment exists and neither timing below includes it), then times the UNet's session creation:
 *
 *   bun bench/lib/ort-threads.ts serial  TE.onnx UNET.onnx        two creations, one after the other
 *   bun bench/lib/ort-threads.ts threads TE.onnx UNET.onnx        two at once: this thread and a Worker
 *   bun bench/lib/ort-threads.ts process TE.onnx UNET.onnx AT_MS  one, started at the epoch time AT_MS
 *                                                                 (the bench starts two such processes)
 *
 * Each prints one JSON line of [start, end] pairs in epoch milliseconds (`performance.timeOrigin +
 * performance.now()`, comparable across threads and processes; `spansOf` reads it back). Every
 * session has one intra-op thread: creation runs on the calling thread either way, and no pool
 * competes for the two cores.
 */
import * as ort from "onnxruntime-node";

const options = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "disabled", // the graph cache's graphs are optimized already
  extra: { "session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0" },
} as const;
const now = () => performance.timeOrigin + performance.now();

/** [start, end] of one UNet session's creation; the session is released after the clock stops. */
async function createTimed(file: string): Promise<[number, number]> {
  const start = now();
  const s = await ort.InferenceSession.create(file, options);
  const end = now();
  await s.release();
  return [start, end];
}

/** The [start, end] pairs of one run's output (its last line). */
export function spansOf(stdout: string): [number, number][] {
  return (JSON.parse(stdout.trim().split("\n").at(-1)!) as { spans: [number, number][] }).spans;
}

const scope = globalThis as unknown as { postMessage(m: unknown): void; onmessage: ((e: { data: { unet: string } }) => void) | null };

if (!Bun.isMainThread) {
  // The Worker of `threads`: ready once onnxruntime-node is imported; creates when told.
  scope.onmessage = async (e) => scope.postMessage({ span: await createTimed(e.data.unet) });
  scope.postMessage({ ready: true });
} else if (import.meta.main) {
  const [mode, te, unet, at] = process.argv.slice(2);
  if (!mode || !te || !unet || !["serial", "threads", "process"].includes(mode) || (mode === "process" && !at)) {
    console.error("usage: bun bench/lib/ort-threads.ts serial|threads|process TE.onnx UNET.onnx [AT_MS]");
    process.exit(2);
  }
  await (await ort.InferenceSession.create(te, options)).release();
  let spans: [number, number][];
  if (mode === "serial") {
    spans = [await createTimed(unet), await createTimed(unet)];
  } else if (mode === "threads") {
    const worker = new Worker(import.meta.url);
    const messages: ((m: { ready?: boolean; span?: [number, number] }) => void)[] = [];
    worker.onmessage = (e) => messages.shift()?.(e.data);
    const next = () => new Promise<{ ready?: boolean; span?: [number, number] }>((r) => messages.push(r));
    await next(); // the worker has imported onnxruntime-node
    const theirs = next();
    worker.postMessage({ unet });
    const mine = await createTimed(unet);
    spans = [mine, (await theirs).span!];
    worker.terminate();
  } else {
    // Sleep to just before the agreed instant, then wait it out on the clock.
    const t = Number(at);
    if (t - Date.now() > 5) await new Promise((r) => setTimeout(r, t - Date.now() - 5));
    while (Date.now() < t);
    spans = [await createTimed(unet)];
  }
  console.log(JSON.stringify({ mode, spans }));
  process.exit(0);
}
