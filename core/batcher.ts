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
 *  - otherwise after `maxWaitMs`, or, when that is not set, after 1.5 × the measured step period (the
 *    time between a run's successive calls): long enough for the lanes whose batch is in flight to
 *    come back, so runs that started out of phase fall into step after one wait instead of
 *    alternating half-size batches forever.
 * Merging is not always faster: when the model call is short next to each run's own work between
 * calls (scheduler, previews), or the hardware runs separate calls in parallel well, runs that call
 * the model separately overlap better. So, unless `adaptive` is false, the batcher measures it while
 * two or more runs are active: it times windows of steps merging and not merging ("separate": every
 * call goes to the model at once, as without a batcher), keeps the faster mode, and re-measures
 * the other every few windows.
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
  /** Rows sent to the model. */
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
  readonly rows: number;
  readonly resolve: (t: Tensor) => void;
  readonly reject: (e: unknown) => void;
  readonly detach: () => void;
}

const FIRST_WAIT_MS = 5; // before any step has been timed
const MIN_WAIT_MS = 1;
/** A measuring window lasts this many run steps per active run. */
const WINDOW_STEPS_PER_RUN = 6;
/** Windows in the faster mode between two measurements of the other. */
const EXPLOIT_WINDOWS = 6;

interface Window {
  readonly mode: BatchMode;
  readonly start: number;
  readonly target: number;
  done: number;
}

export class PredictBatcher {
  /** Runs in a denoising loop → when each last called (ms), for the step period. */
  private readonly lanes = new Map<object, number | null>();
  private waiting: Waiting[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Exponential moving average of the time between a run's successive calls, ms. */
  private periodMs: number | null = null;
  private counts = { calls: 0, modelCalls: 0, rows: 0, maxMerged: 0 };
  private mode: BatchMode = "merge";
  /** Modes of the next measuring windows; refilled from the measurements when empty. */
  private plan: BatchMode[] = ["merge", "separate"];
  private window: Window | null = null;
  private readonly stepsPerSecond: Record<BatchMode, number> = { merge: 0, separate: 0 };

  constructor(
    private readonly predictor: NoisePredictorInstance,
    private readonly options: BatchingOptions,
  ) {
    if (!(options.maxRows >= 1)) throw new RangeError(`batching.maxRows must be at least 1, got ${options.maxRows}`);
  }

  get stats(): BatcherStats {
    return {
      ...this.counts,
      merging: this.mode === "merge" ? 1 : 0,
      mergeStepsPerSecond: this.stepsPerSecond.merge,
      separateStepsPerSecond: this.stepsPerSecond.separate,
    };
  }

  /** The mode in use now: "merge", or "separate" while adaptive measurement found that faster. */
  get currentMode(): BatchMode {
    return this.mode;
  }

  join(): BatchLane {
    const lane = {};
    this.lanes.set(lane, null);
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

  private enqueue(lane: object, input: NoisePredictorInput, signal?: AbortSignal): Promise<Tensor> {
    this.counts.calls++;
    const now = performance.now();
    const last = this.lanes.get(lane);
    if (last != null) this.periodMs = this.periodMs === null ? now - last : 0.8 * this.periodMs + 0.2 * (now - last);
    if (this.lanes.has(lane)) this.lanes.set(lane, now);
    if (signal?.aborted) return Promise.reject(signal.reason ?? new DOMException("The run was cancelled", "AbortError"));
    return new Promise<Tensor>((resolve, reject) => {
      const onAbort = () => {
        // Cancelled while waiting: leave the queue now; the others are not held up by it.
        const i = this.waiting.indexOf(item);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          reject(signal!.reason ?? new DOMException("The run was cancelled", "AbortError"));
          this.maybeFlush();
        }
      };
      const item: Waiting = {
        lane,
        input,
        key: `${input.sample.dims.slice(1).join("x")}|${input.encoderHiddenStates.dims.slice(1).join("x")}` +
          (this.predictor.perRowTimesteps ? "" : `|${typeof input.timestep === "number" ? input.timestep : input.timestep.join(",")}`),
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
    const waitingLanes = new Set(this.waiting.map((w) => w.lane));
    const everyLaneWaits = [...this.lanes.keys()].every((l) => waitingLanes.has(l));
    const rows = this.waiting.reduce((n, w) => n + w.rows, 0);
    if (everyLaneWaits || rows >= this.limit()) {
      this.flush();
      return;
    }
    if (!this.timer) {
      const wait = this.options.maxWaitMs ?? Math.max(MIN_WAIT_MS, 1.5 * (this.periodMs ?? FIRST_WAIT_MS));
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
    for (const [i, w] of items.entries()) {
      w.detach();
      const key = this.mode === "merge" ? w.key : String(i);
      const chunks = groups.get(key) ?? [];
      const last = chunks[chunks.length - 1];
      if (last && last.reduce((n, x) => n + x.rows, 0) + w.rows <= limit) last.push(w);
      else chunks.push([w]);
      groups.set(key, chunks);
    }
    for (const chunks of groups.values()) for (const chunk of chunks) void this.call(chunk);
  }

  private async call(members: Waiting[]): Promise<void> {
    this.counts.modelCalls++;
    this.counts.maxMerged = Math.max(this.counts.maxMerged, members.length);
    try {
      let out: Tensor;
      if (members.length === 1) {
        out = await this.predictor.predict(members[0]!.input);
      } else {
        out = await this.predictor.predict({
          sample: concat0(members.map((m) => m.input.sample)),
          timestep: mergedTimesteps(members),
          encoderHiddenStates: concat0(members.map((m) => m.input.encoderHiddenStates)),
        });
      }
      const total = members.reduce((n, m) => n + m.rows, 0);
      if (out.dims[0] !== total) throw new Error(`noise predictor returned ${out.dims[0]} rows for ${total}`);
      this.counts.rows += total;
      let at = 0;
      for (const m of members) {
        m.resolve(members.length === 1 ? out : slice0(out, at, at + m.rows));
        at += m.rows;
      }
    } catch (err) {
      for (const m of members) m.reject(err);
    }
    if (this.window) {
      this.window.done += members.length;
      this.measure();
    }
    if (this.waiting.length) this.maybeFlush(); // the mode may have changed under waiting calls
  }

  /**
   * Adaptive mode: open a measuring window when two or more runs are active, drop it when fewer
   * are, and when it is full record its steps/s and move to the next window's mode.
   */
  private measure(): void {
    if (this.options.adaptive === false) return;
    if (this.lanes.size < 2) {
      this.window = null;
      return;
    }
    const now = performance.now();
    if (this.window && this.window.done >= this.window.target) {
      const w = this.window;
      this.stepsPerSecond[w.mode] = (1000 * w.done) / Math.max(now - w.start, 1e-3);
      this.window = null;
    }
    if (this.window) return;
    if (this.plan.length === 0) {
      const { merge, separate } = this.stepsPerSecond;
      const best: BatchMode = merge >= separate ? "merge" : "separate";
      const other: BatchMode = best === "merge" ? "separate" : "merge";
      this.plan = [...new Array<BatchMode>(EXPLOIT_WINDOWS).fill(best), other];
    }
    this.mode = this.plan.shift()!;
    this.window = { mode: this.mode, start: now, target: WINDOW_STEPS_PER_RUN * this.lanes.size, done: 0 };
  }
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
