/**
 * Cross-run batching of noise-predictor calls ("dynamic batching", as inference servers call it).
 *
 * Concurrent runs of one pipeline — several API jobs, say — each call the UNet once per denoising
 * step. The batcher merges the calls that wait at the same moment into one call over their
 * concatenated rows, so the model runs fewer, larger batches (on a CPU a 4× larger batch costs well
 * under 4× the time). Every run keeps its own seed, latents, scheduler and cancellation; only the
 * model call is shared, and each row's output is the row-wise same network evaluation.
 *
 * When a call flushes:
 *  - at once when every run in a denoising loop (a "lane") has a call waiting — a lone run never
 *    waits;
 *  - when the waiting calls hold `maxRows` rows;
 *  - otherwise after `maxWaitMs`, or, when that is not set, after 1.5 × the waiting run's own step
 *    period (its model call plus its own work until its next call, queueing excluded): long enough
 *    for the lanes whose batch is in flight to come back, so runs that started out of phase fall
 *    into step after one wait instead of alternating half-size batches forever. Runs whose last
 *    call had another shape (another image size) cannot share a call and are not waited for.
 * Merging is not always faster: when the model call is short next to each run's own work between
 * calls (scheduler, previews), or the hardware runs separate calls in parallel well, runs that call
 * the model separately overlap better. So, unless `adaptive` is false, the batcher measures it while
 * two or more runs are active: it times windows of steps merging and not merging ("separate": every
 * call goes to the model at once, as without a batcher), per number of active runs, keeps the
 * faster mode, and re-measures the other every few windows.
 *
 * Calls merge when their sample and conditioning shapes are equal and the model takes one timestep
 * per row (`perRowTimesteps`: runs at different steps share a call, the usual case on a server where
 * jobs arrive at different times); a model with a single timestep for the whole batch (a scalar or
 * [1] input, as some SD exports have) merges only calls at the same timestep. The rest run as their
 * own batches in the same flush.
 *
 * Hand-written because no library does this for an arbitrary async function over row-stacked tensors
 * (DataLoader-style batchers key single items and cannot split tensor rows back out).
 */
import type { NoisePredictorInput, NoisePredictorInstance } from "./plugin.ts";
import { concat0, slice0, type Tensor } from "./tensor.ts";

export interface BatchingOptions {
  /** Most rows in one merged model call (the model's own `maxBatch` also applies). */
  readonly maxRows: number;
  /** Longest a waiting call waits for other runs; default: 1.5 × the measured step period. */
  readonly maxWaitMs?: number;
  /** Measure merging against separate calls and keep the faster (default true); false: always merge. */
  readonly adaptive?: boolean;
}

export type BatchMode = "merge" | "separate";

export interface BatcherStats {
  /** predict() calls made by the runs. */
  readonly calls: number;
  /** Model calls actually made. */
  readonly modelCalls: number;
  /** Rows sent to the model (counted when sent, whether or not the call then succeeds). */
  readonly rows: number;
  /** Largest number of runs merged into one model call. */
  readonly maxMerged: number;
  /** 1 while merging, 0 while calling separately (adaptive mode found that faster). */
  readonly merging: number;
  /** Last measured throughput of each mode, run steps per second (0: not measured yet). */
  readonly mergeStepsPerSecond: number;
  readonly separateStepsPerSecond: number;
}

/** One run's handle on the batcher, held for the length of its denoising loop. */
export interface BatchLane {
  predict(input: NoisePredictorInput, signal?: AbortSignal): Promise<Tensor>;
  /** The run left its loop (finished, failed or cancelled): nobody waits for it any more. */
  leave(): void;
}

interface Waiting {
  readonly lane: object;
  readonly input: NoisePredictorInput;
  readonly key: string;
  readonly shape: string;
  readonly rows: number;
  readonly resolve: (t: Tensor) => void;
  readonly reject: (e: unknown) => void;
  readonly detach: () => void;
}

const FIRST_WAIT_MS = 5; // before a run's step has been timed
const MIN_WAIT_MS = 1;
/** A measuring window lasts this many run steps per active run. */
const WINDOW_STEPS_PER_RUN = 4;
/** Windows in the faster mode between two measurements of the other. */
const EXPLOIT_WINDOWS = 6;

interface Lane {
  /** When its last call went to the model (ms): the step period excludes time spent queued. */
  sentAt: number | null;
  /** Moving average of its step period: model call + its own work until its next call, ms. */
  periodMs: number | null;
  /** Its last call's input: only lanes whose shape could merge with a waiting call are waited for. */
  last: NoisePredictorInput | null;
  /** Shape part of `last`'s key, worked out when another lane needs it (`shapeOf`). */
  shape: string | null;
  shapeOf: NoisePredictorInput | null;
}

interface Window {
  readonly mode: BatchMode;
  /** Runs active when it opened; a window is dropped when that changes (speeds depend on it). */
  readonly lanes: number;
  readonly start: number;
  readonly target: number;
  done: number;
}

type Speeds = Record<BatchMode, number>;

export class PredictBatcher {
  private readonly lanes = new Map<object, Lane>();
  private waiting: Waiting[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private counts = { calls: 0, modelCalls: 0, rows: 0, maxMerged: 0 };
  private mode: BatchMode = "merge";
  /** Modes of the next measuring windows; refilled from the measurements when empty. */
  private plan: BatchMode[] = [];
  private window: Window | null = null;
  /** Measured steps/s of each mode, per number of active runs (speeds at different counts differ). */
  private readonly speeds = new Map<number, Speeds>();
  /** The run count of the last decision, for `stats`. */
  private decidedAt = 0;

  constructor(
    private readonly predictor: NoisePredictorInstance,
    private readonly options: BatchingOptions,
  ) {
    if (!(options.maxRows >= 1)) throw new RangeError(`batching.maxRows must be at least 1, got ${options.maxRows}`);
  }

  get stats(): BatcherStats {
    const sp = this.speeds.get(this.decidedAt) ?? { merge: 0, separate: 0 };
    return {
      ...this.counts,
      merging: this.mode === "merge" ? 1 : 0,
      mergeStepsPerSecond: sp.merge,
      separateStepsPerSecond: sp.separate,
    };
  }

  /** The mode in use now: "merge", or "separate" while adaptive measurement found that faster. */
  get currentMode(): BatchMode {
    return this.mode;
  }

  join(): BatchLane {
    const lane = {};
    this.lanes.set(lane, { sentAt: null, periodMs: null, last: null, shape: null, shapeOf: null });
    this.measure();
    return {
      predict: (input, signal) => this.enqueue(lane, input, signal),
      leave: () => {
        if (!this.lanes.delete(lane)) return;
        this.measure();
        this.maybeFlush();
      },
    };
  }

  /** The shape part of a call's key (worked out once per call, and only when calls may merge). */
  private shapeOf(l: Lane): string | null {
    const input = l.last;
    if (input === null) return null;
    if (l.shapeOf !== input) {
      l.shapeOf = input;
      l.shape = shapeKey(input);
    }
    return l.shape;
  }

  private enqueue(lane: object, input: NoisePredictorInput, signal?: AbortSignal): Promise<Tensor> {
    this.counts.calls++;
    const l = this.lanes.get(lane);
    if (l) {
      const now = performance.now();
      if (l.sentAt !== null) l.periodMs = l.periodMs === null ? now - l.sentAt : 0.8 * l.periodMs + 0.2 * (now - l.sentAt);
      l.last = input;
    }
    // AbortSignal's reason is always set once aborted (an "AbortError" DOMException unless the caller gave one).
    if (signal?.aborted) return Promise.reject(signal.reason);
    // A lone run with nothing queued: flush() would send its call at once, as its own batch; send it
    // straight away, without the queue's promise, abort listener and grouping (a measured part of the
    // per-step overhead: bench/overhead.ts).
    if (l && this.lanes.size === 1 && this.waiting.length === 0) {
      l.sentAt = performance.now();
      return this.callAlone(input);
    }
    const shape = l ? this.shapeOf(l)! : shapeKey(input);
    return new Promise<Tensor>((resolve, reject) => {
      const onAbort = () => {
        // Cancelled while waiting: leave the queue now; the others are not held up by it.
        const i = this.waiting.indexOf(item);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          reject(signal!.reason);
          this.maybeFlush();
        }
      };
      const item: Waiting = {
        lane,
        input,
        shape,
        key: this.predictor.perRowTimesteps ? shape : `${shape}|${typeof input.timestep === "number" ? input.timestep : input.timestep.join(",")}`,
        rows: input.sample.dims[0]!,
        resolve,
        reject,
        detach: () => signal?.removeEventListener("abort", onAbort),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(item);
      this.maybeFlush();
    });
  }

  private maybeFlush(): void {
    if (this.waiting.length === 0) {
      this.clearTimer();
      return;
    }
    if (this.mode === "separate") {
      this.flush();
      return;
    }
    // Flush once every run that could share a call is waiting: a run whose last call had another
    // shape (another image size, say) cannot, so nobody waits for it; a run with no call yet might.
    const waitingLanes = new Set(this.waiting.map((w) => w.lane));
    const shapes = new Set(this.waiting.map((w) => w.shape));
    const everyLaneWaits = [...this.lanes].every(([key, l]) => waitingLanes.has(key) || (l.last !== null && !shapes.has(this.shapeOf(l)!)));
    const rows = this.waiting.reduce((n, w) => n + w.rows, 0);
    if (everyLaneWaits || rows >= this.limit()) {
      this.flush();
      return;
    }
    if (!this.timer) {
      // The first waiting run waits at most 1.5 of its own step periods: a fast run is never held
      // long by a slow one.
      const own = this.lanes.get(this.waiting[0]!.lane)?.periodMs ?? null;
      const wait = this.options.maxWaitMs ?? Math.max(MIN_WAIT_MS, 1.5 * (own ?? FIRST_WAIT_MS));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, wait);
    }
  }

  private limit(): number {
    return Math.max(1, Math.min(this.options.maxRows, this.predictor.maxBatch));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Run everything waiting now: one model call per group of compatible calls that fits the row limit. */
  private flush(): void {
    this.clearTimer();
    const items = this.waiting;
    this.waiting = [];
    const groups = new Map<string, Waiting[][]>();
    const limit = this.limit();
    const now = performance.now();
    for (const [i, w] of items.entries()) {
      w.detach();
      const l = this.lanes.get(w.lane);
      if (l) l.sentAt = now;
      const key = this.mode === "merge" ? w.key : String(i);
      const chunks = groups.get(key) ?? [];
      const last = chunks[chunks.length - 1];
      if (last && last.reduce((n, x) => n + x.rows, 0) + w.rows <= limit) last.push(w);
      else chunks.push([w]);
      groups.set(key, chunks);
    }
    for (const chunks of groups.values()) for (const chunk of chunks) void this.call(chunk);
  }

  /**
   * `call` for one run's input alone (the lone-run path of `enqueue`): the same counts, and the
   * predictor's promise itself, with no async layer around it (a measured cost per step,
   * bench/overhead.ts). Its rows are not checked here, since nothing is split: the denoise loop
   * checks the output's size itself.
   */
  private callAlone(input: NoisePredictorInput): Promise<Tensor> {
    this.counts.modelCalls++;
    if (this.counts.maxMerged < 1) this.counts.maxMerged = 1;
    this.counts.rows += input.sample.dims[0]!;
    try {
      return this.predictor.predict(input);
    } catch (err) {
      return Promise.reject(err); // a predictor that throws rejects, as on the queued path
    }
  }

  private async call(members: Waiting[]): Promise<void> {
    this.counts.modelCalls++;
    this.counts.maxMerged = Math.max(this.counts.maxMerged, members.length);
    const total = members.reduce((n, m) => n + m.rows, 0);
    this.counts.rows += total; // sent, as on the lone path
    let ok = false;
    try {
      let out: Tensor;
      if (members.length === 1) {
        out = await this.predictor.predict(members[0]!.input);
      } else {
        const first = members[0]!.input;
        out = await this.predictor.predict({
          sample: concat0(members.map((m) => m.input.sample)),
          timestep: mergedTimesteps(members),
          encoderHiddenStates: concat0(members.map((m) => m.input.encoderHiddenStates)),
          ...(first.pooled ? { pooled: concat0(members.map((m) => m.input.pooled!)) } : {}),
          ...(first.inpaint ? { inpaint: concat0(members.map((m) => m.input.inpaint!)) } : {}),
          ...(first.guidance ? { guidance: Float32Array.from(members.flatMap((m) => [...m.input.guidance!])) } : {}),
        });
      }
      if (out.dims[0] !== total) throw new Error(`noise predictor returned ${out.dims[0]} rows for ${total}`);
      let at = 0;
      for (const m of members) {
        m.resolve(members.length === 1 ? out : slice0(out, at, at + m.rows));
        at += m.rows;
      }
      ok = true;
    } catch (err) {
      for (const m of members) m.reject(err);
    }
    if (this.window && ok) {
      this.window.done += members.length; // only steps that succeeded count as speed
      this.measure();
    }
    if (this.waiting.length) this.maybeFlush(); // the mode may have changed under waiting calls
  }

  /**
   * Adaptive mode: while two or more runs are active, time windows of run steps in each mode,
   * separately for each number of active runs; keep the faster mode and re-measure the other every
   * `EXPLOIT_WINDOWS` windows. A window whose run count changes is dropped and redone.
   */
  private measure(): void {
    if (this.options.adaptive === false) return;
    const n = this.lanes.size;
    const now = performance.now();
    if (this.window && (this.window.lanes !== n || n < 2)) {
      if (this.plan[0] !== this.window.mode) this.plan.unshift(this.window.mode);
      this.window = null;
    }
    if (n < 2) return;
    if (this.window && this.window.done >= this.window.target) {
      const w = this.window;
      const sp = this.speeds.get(n) ?? { merge: 0, separate: 0 };
      sp[w.mode] = (1000 * w.done) / Math.max(now - w.start, 1e-3);
      this.speeds.set(n, sp);
      this.window = null;
    }
    if (this.window) return;
    const sp = this.speeds.get(n);
    if (!sp?.merge || !sp.separate) {
      // Not measured at this run count yet: measure what is missing, starting with the mode that won
      // at the nearest measured count (merge when there is none).
      const near = [...this.speeds].filter(([, v]) => v.merge && v.separate).sort((x, y) => Math.abs(x[0] - n) - Math.abs(y[0] - n))[0]?.[1];
      const first: BatchMode = near && near.separate > near.merge ? "separate" : "merge";
      const order: BatchMode[] = [first, first === "merge" ? "separate" : "merge"];
      this.plan = order.filter((m) => !sp?.[m]);
    } else if (this.plan.length === 0) {
      const best: BatchMode = sp.merge >= sp.separate ? "merge" : "separate";
      this.plan = [...new Array<BatchMode>(EXPLOIT_WINDOWS).fill(best), best === "merge" ? "separate" : "merge"];
      this.decidedAt = n;
    }
    this.mode = this.plan.shift()!;
    this.window = { mode: this.mode, lanes: n, start: now, target: WINDOW_STEPS_PER_RUN * n, done: 0 };
  }
}

/**
 * What calls must share to merge: sample and conditioning shapes, and the extra conditioning (SDXL's
 * pooled embeddings, LCM's guidance, inpainting channels) — its presence and shape.
 */
function shapeKey(input: NoisePredictorInput): string {
  const extra = [input.pooled && `p${input.pooled.dims.slice(1).join("x")}`, input.guidance && "g", input.inpaint && `i${input.inpaint.dims.slice(1).join("x")}`].filter(Boolean).join(",");
  return `${input.sample.dims.slice(1).join("x")}|${input.encoderHiddenStates.dims.slice(1).join("x")}|${extra}`;
}

/** One value when every row shares it (any model takes that), else one per row. */
function mergedTimesteps(members: readonly Waiting[]): number | Float32Array {
  const first = members[0]!.input.timestep;
  if (typeof first === "number" && members.every((m) => m.input.timestep === first)) return first;
  const out = new Float32Array(members.reduce((n, m) => n + m.rows, 0));
  let at = 0;
  for (const m of members) {
    const t = m.input.timestep;
    if (typeof t === "number") out.fill(t, at, at + m.rows);
    else out.set(t, at);
    at += m.rows;
  }
  return out;
}
