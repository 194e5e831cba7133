/**
 * The thread policy: how many intra-op threads each ONNX session gets, whether its pool spins while
 * it waits for work, and whether its threads are pinned to cores. One place decides it for every
 * session a pipeline creates.
 *
 * The noise predictor (UNet) runs 20–50 times per image and is where the compute is: it gets the
 * cores. Every other model (text encoders, VAE, upscaler, the evaluation CLIP) runs once or twice per
 * image on small tensors: one thread, so it creates no pool whose idle threads compete with the UNet's
 * (issue 13 measured the UNet 18 % slower after the text encoder's 2-thread pool had run).
 *
 * Applied to onnxruntime-node's CPU provider (`intraOpNumThreads`, `interOpNumThreads`,
 * `executionMode` and the `session.intra_op.allow_spinning` / `session.inter_op.allow_spinning` /
 * `session.intra_op_thread_affinities` config entries). onnxruntime-web has one thread count for all
 * its sessions (`env.wasm.numThreads`), set by the runtime adapter before its first session; the GPU
 * providers do not use these pools.
 */

/** Which pool a session belongs to. */
export type SessionRole = "noise-predictor" | "auxiliary";

export interface ThreadPolicyOptions {
  /** Intra-op threads of the noise predictor; default: every core the host reports. */
  readonly noisePredictor?: number;
  /** Intra-op threads of every other model; default 1. */
  readonly auxiliary?: number;
  /**
   * Whether a pool's threads spin (busy-wait) between work items instead of sleeping. Default false
   * for both: on a 2-core machine a spinning pool takes the core the JS thread needs between UNet
   * calls (`bun bench/load.ts` measures both).
   */
  readonly spinning?: boolean | { readonly noisePredictor?: boolean; readonly auxiliary?: boolean };
  /**
   * Pin the noise predictor's pool threads to cores 2…n (the calling thread is not pinned). Default
   * false: with an explicit thread count onnxruntime does not pin; pinning helps only on a machine
   * the process has to itself.
   */
  readonly pin?: boolean;
}

/** What one session is created with, resolved. `intraOpThreads` 0: onnxruntime's own choice. */
export interface SessionThreads {
  readonly intraOpThreads: number;
  readonly spinning: boolean;
  /** onnxruntime's `session.intra_op_thread_affinities` value, when pinned. */
  readonly affinities?: string;
}

export interface ThreadPolicy {
  readonly noisePredictor: SessionThreads;
  readonly auxiliary: SessionThreads;
}

function count(at: string, n: number | undefined): number | undefined {
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new RangeError(`threads.${at}: must be a whole number from 1 to 1024, got ${n}`);
  return n;
}

/**
 * The policy for `options` on a host with `cores` logical cores (undefined where the host does not
 * say: the noise predictor is then left to onnxruntime's default). A plain number is the noise
 * predictor's thread count (`--threads N`); the other models keep 1.
 */
export function threadPolicy(options: number | ThreadPolicyOptions | undefined, cores: number | undefined): ThreadPolicy {
  const o: ThreadPolicyOptions = typeof options === "number" ? { noisePredictor: options } : (options ?? {});
  const unet = count("noisePredictor", o.noisePredictor) ?? (cores && cores > 0 ? cores : 0);
  const aux = count("auxiliary", o.auxiliary) ?? 1;
  const spin = typeof o.spinning === "object" ? o.spinning : { noisePredictor: o.spinning, auxiliary: o.spinning };
  const pinned = o.pin && unet > 1 ? Array.from({ length: unet - 1 }, (_, i) => String(i + 2)).join(";") : undefined;
  return Object.freeze({
    noisePredictor: Object.freeze({ intraOpThreads: unet, spinning: spin.noisePredictor ?? false, ...(pinned ? { affinities: pinned } : {}) }),
    auxiliary: Object.freeze({ intraOpThreads: aux, spinning: spin.auxiliary ?? false }),
  });
}

/** onnxruntime-node session options for one session's threads. */
export function nativeThreadOptions(t: SessionThreads): Record<string, unknown> {
  const extra: Record<string, string> = {
    "session.intra_op.allow_spinning": t.spinning ? "1" : "0",
    "session.inter_op.allow_spinning": "0",
  };
  if (t.affinities) extra["session.intra_op_thread_affinities"] = t.affinities;
  return {
    ...(t.intraOpThreads > 0 ? { intraOpNumThreads: t.intraOpThreads } : {}),
    // Sequential execution: no inter-op pool (one UNet call has no independent branches worth a thread).
    interOpNumThreads: 1,
    executionMode: "sequential",
    extra,
  };
}

/** `threads` as the CLI flags give it: `--threads N` and `--threads-aux N`, `--spin`, `--pin`. */
export function threadOptionsFromFlags(flags: { threads?: string | undefined; threadsAux?: string | undefined; spin?: boolean | undefined; pin?: boolean | undefined }): ThreadPolicyOptions | undefined {
  const num = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`--${flag}: must be a whole number ≥ 1, got "${v}"`);
    return n;
  };
  const o: ThreadPolicyOptions = {
    ...(flags.threads !== undefined ? { noisePredictor: num("threads", flags.threads) } : {}),
    ...(flags.threadsAux !== undefined ? { auxiliary: num("threads-aux", flags.threadsAux) } : {}),
    ...(flags.spin ? { spinning: { noisePredictor: true } } : {}),
    ...(flags.pin ? { pin: true } : {}),
  };
  return Object.keys(o).length ? o : undefined;
}
