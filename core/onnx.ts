/**
 * One interface over onnxruntime-node (native, Bun/Node servers) and onnxruntime-web (WASM and
 * WebGPU: Deno, browsers, edge). The core never imports either package: the runtime adapter
 * (`core/adapters/*`) hands in loaders, and this module picks a backend and an execution provider
 * from one table, converts dtypes at the boundary (float16, int64, int32) and caches sessions per
 * model file.
 *
 * `load` reads and checks a model file and returns its inputs and outputs as the file declares them
 * (`core/onnx-graph.ts`); the session is created on the model's first `run` (or `ready()`), so a
 * pipeline's img2img encoder or metric CLIP costs nothing in a run that does not use it. Each session's
 * threads come from the thread policy (`core/threads.ts`); on onnxruntime-node's CPU provider the
 * optimized graph is kept in a per-machine cache (`OptimizedGraphCache`, the adapter's).
 */
import { f16ToF32, f32ToF16 } from "./float16.ts";
import { z } from "zod";
import { SHA256_HEX, sha256Hex } from "./manifest.ts";
import { ModelFileError, stampSize, type ModelSource } from "./model-source.ts";
import { externalDataFiles, OnnxFormatError, pinSymbolicDims, probeModelBytes, readOnnxGraph, type GraphIO } from "./onnx-graph.ts";
import { sameDims, type Tensor } from "./tensor.ts";
import { nativeThreadOptions, threadPolicy, type SessionRole, type ThreadPolicy, type ThreadPolicyOptions } from "./threads.ts";

export type ExecutionProvider = "auto" | "cpu" | "wasm" | "webgpu";
export const EXECUTION_PROVIDERS: readonly ExecutionProvider[] = ["auto", "cpu", "wasm", "webgpu"];
export type BackendName = "onnxruntime-node" | "onnxruntime-web";

/** The subset of the onnxruntime JS API (identical in -node and -web) that diffgraph uses. */
export interface OrtTensorLike {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: ArrayLike<number | bigint> | Float32Array | BigInt64Array;
  /** "cpu", or "gpu-buffer" for an output left on the GPU (`preferredOutputLocation`). */
  readonly location?: string;
  getData?(releaseData?: boolean): Promise<ArrayLike<number | bigint>>;
  dispose?(): void;
}
export interface OrtValueMetadata {
  readonly name: string;
  readonly isTensor: boolean;
  readonly type?: string;
  readonly shape?: readonly (number | string)[];
}
export interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata?: readonly OrtValueMetadata[];
  readonly outputMetadata?: readonly OrtValueMetadata[];
  run(feeds: Record<string, OrtTensorLike>): Promise<Record<string, OrtTensorLike>>;
  release(): Promise<void>;
}
export interface OrtModuleLike {
  readonly InferenceSession: {
    /** From the model's bytes, or (onnxruntime-node) a file path, external data resolved beside it. */
    create(model: Uint8Array | string, options?: Record<string, unknown>): Promise<OrtSessionLike>;
  };
  readonly Tensor: (new (type: string, data: unknown, dims: readonly number[]) => OrtTensorLike) & {
    /** onnxruntime-web: a tensor over a WebGPU buffer (stays on the GPU). */
    fromGpuBuffer?(buffer: unknown, options: { dataType: string; dims: readonly number[]; dispose?: () => void }): OrtTensorLike;
  };
  readonly env?: { wasm?: { numThreads?: number; wasmPaths?: unknown }; logLevel?: string; webgpu?: { device?: Promise<unknown> | unknown }; versions?: Readonly<Record<string, string>> };
}

/** What a runtime adapter provides: how to load each flavour, and what the host can do. */
export interface OnnxBackends {
  /** onnxruntime-node; absent on Deno-without-node-addons, browsers and edge workers. */
  readonly native?: () => Promise<OrtModuleLike>;
  /**
   * Start creating the native backend's process-wide environment in the background (Bun: on a worker
   * thread, `core/adapters/ort-prewarm-node.ts`), so the first session does not pay for it. Called when
   * a runtime that may use onnxruntime-node is made; at most once per process; never throws.
   */
  readonly prewarm?: () => void;
  /** onnxruntime-web with the WASM and (where `navigator.gpu` exists) WebGPU providers. */
  readonly web?: (provider: "wasm" | "webgpu") => Promise<OrtModuleLike>;
  /** Host name for messages: "bun", "node", "deno", "browser". */
  readonly host: string;
  /** Logical cores the process may use (the thread policy gives them to the noise predictor); default `navigator.hardwareConcurrency`. */
  readonly cores?: number;
  /**
   * The per-machine cache of onnxruntime-optimized graphs (onnxruntime-node only: it writes them to a
   * file). `dir` overrides the adapter's default folder; undefined: no cache on this host, or turned off.
   */
  readonly graphCache?: (dir?: string) => OptimizedGraphCache | undefined;
}

/**
 * Optimized graphs kept across processes: onnxruntime-node writes the graph it optimized
 * (`optimizedModelFilePath`) to `tempPath`, `commit` checks it and moves it into place, and the next
 * start loads it with graph optimization off. Keyed by the model's SHA-256, onnxruntime's version, the
 * provider and the options that change the graph; implemented by `core/adapters/graph-cache-node.ts`.
 */
export interface OptimizedGraphCache {
  readonly dir: string;
  /** `bytes`: the model's; may be undefined when `key.sha256` is given (the model was not read). */
  entry(bytes: Uint8Array | undefined, key: GraphCacheKey): Promise<OptimizedGraphEntry>;
}

export interface GraphCacheKey {
  /** The model file's name, for messages and timings (not part of the key). */
  readonly file?: string;
  /**
   * Whether the model has control-flow subgraphs (`readOnnxGraph`; not part of the key): its optimized
   * graph keeps its weights inside, since onnxruntime 1.30 writes such a graph with its weights apart
   * and then refuses to load it (a subgraph's initializer written twice, "initializer name is not unique").
   */
  readonly subgraphs?: boolean;
  /** The model's SHA-256 when already known (a manifest vouched for it); else the cache hashes the bytes. */
  readonly sha256?: string;
  /** "onnxruntime-node 1.30.0". */
  readonly runtime: string;
  readonly provider: string;
  /** The session options that change the optimized graph (optimization level, fixed dimensions). */
  readonly options: Readonly<Record<string, unknown>>;
}

export interface OptimizedGraphEntry {
  /** The file of this key (present or not). */
  readonly path: string;
  /**
   * The cached graph's file, verified against its record (sizes and SHA-256s of the graph and its
   * weights file); undefined on a miss. The native runtime reads it, and its weights beside it.
   */
  readonly cachedFile?: string;
  /**
   * With `cachedFile`: whether the files are still the ones this lookup verified. Asked after a
   * session was created from them, since onnxruntime reads them after the check; false: drop it.
   */
  readonly unchanged?: () => Promise<boolean>;
  /** Whether this lookup hashed the files (fresh, or changed since their record) rather than trusting their stamps. */
  readonly hashed?: boolean;
  /** Where onnxruntime writes the optimized graph on a miss. */
  readonly tempPath: string;
  /** Session config entries (`extra`) the session that writes `tempPath` is created with: where its weights go. */
  readonly writeConfig?: Readonly<Record<string, string>>;
  /**
   * After a session was created with `optimizedModelFilePath: tempPath`: verify and move into place.
   * Returns why not, or null. Never throws. `note` hears what it changed in the graph onnxruntime wrote.
   */
  commit(note?: (message: string) => void): Promise<string | null>;
  /** The cached file did not load: remove it, so this start and the next rebuild it. Never throws. */
  discard(): Promise<void>;
}

/**
 * The part of a graph-cache key that comes from the runtime and the session options: onnxruntime's
 * version, the provider and the options that change the optimized graph. One place, so a program
 * that looks a cached graph up (the bench's floor) asks for exactly what a session stored.
 */
export function graphCacheKey(ort: OrtModuleLike, provider: string, options: Readonly<Record<string, unknown>>): Pick<GraphCacheKey, "runtime" | "provider" | "options"> {
  const version = ort.env?.versions?.node ?? ort.env?.versions?.common ?? "unknown";
  return {
    runtime: `onnxruntime-node ${version}`,
    provider,
    options: {
      graphOptimizationLevel: options.graphOptimizationLevel,
      freeDimensionOverrides: options.freeDimensionOverrides ?? null,
      // Entries with fixed axes written before onnxruntime-node was handed them in the bytes (the
      // binding ignores the option) hold graphs with those axes free: this marks the ones that do not.
      ...(options.freeDimensionOverrides ? { fixedInBytes: true } : {}),
    },
  };
}

/**
 * The largest model `pinShapes` makes sessions for its sizes: each set of sizes is an entry of its
 * own in the optimized-graph cache, as big as the model (emoji-64's UNet: 30 MB with its prepacked
 * weights), and a cache of a 1.7 GB float16 UNet per image size would fill a disk. Larger models keep
 * one unpinned session and entry.
 */
export const PIN_MAX_MODEL_BYTES = 256 * 1024 * 1024;

/**
 * Provider table: for each requested provider, the (backend, ORT execution provider) pairs to try in
 * order. "auto" prefers the GPU, then the native CPU kernels, then WASM.
 */
const PLAN: Readonly<Record<ExecutionProvider, readonly (readonly [BackendName, string])[]>> = Object.freeze({
  auto: [
    ["onnxruntime-node", "webgpu"],
    ["onnxruntime-node", "cpu"],
    ["onnxruntime-web", "webgpu"],
    ["onnxruntime-web", "wasm"],
  ],
  cpu: [["onnxruntime-node", "cpu"]],
  wasm: [["onnxruntime-web", "wasm"]],
  webgpu: [
    ["onnxruntime-node", "webgpu"],
    ["onnxruntime-web", "webgpu"],
  ],
});

export type OnnxDType = "float32" | "float16" | "int64" | "int32" | "bool" | "uint8" | "int8" | "float64";

export interface IOInfo {
  readonly name: string;
  readonly type: OnnxDType | string;
  /** Dimensions; a string is a symbolic (dynamic) axis such as "batch". Empty for a scalar. */
  readonly shape: readonly (number | string)[];
}

/** A value to feed: floats (converted to the model's float dtype) or integers (int32/int64). */
export type Feed = Tensor | { readonly dims: readonly number[]; readonly ints: ArrayLike<number> };

export interface IOExpectation {
  readonly rank?: number | readonly number[];
  readonly types?: readonly string[];
  /** What the slot is, for the message ("the UNet's latents"). */
  readonly what?: string;
}

export interface OnnxModelInfo {
  readonly file: string;
  readonly backend: BackendName;
  readonly provider: string;
  readonly inputs: readonly IOInfo[];
  readonly outputs: readonly IOInfo[];
}

/** A created session and what runs it. */
export interface OpenedSession {
  readonly backend: BackendName;
  readonly provider: string;
  readonly ort: OrtModuleLike;
  readonly session: OrtSessionLike;
  readonly serialize: <T>(work: () => Promise<T>) => Promise<T>;
  /** onnxruntime-web on WebGPU with residency on: repeated inputs stay on the GPU, outputs are read back on demand. */
  readonly gpu: boolean;
}

export class OnnxModel implements OnnxModelInfo {
  private opened?: OpenedSession;
  private opening?: Promise<OpenedSession>;
  private released = false;
  private ins: readonly IOInfo[];
  private outs: readonly IOInfo[];
  /** `ins` by name: `input()` runs for every feed of every call (once per denoising step). */
  private readonly byName: ReadonlyMap<string, IOInfo>;
  /** Whether some input fixes its first axis: only then can a batch need slices (`run`). */
  private readonly fixedFirstAxis: boolean;
  /**
   * The ORT tensor made for a float32 array fed off onnxruntime-web's WebGPU queue, kept while that
   * array lives and is fed again with the same dims: the text embeddings (the same every step of a
   * run) and the denoising loop's sample buffer (one per run, refilled every step) then cost no new
   * tensor per step. The tensor wraps the array itself, so a run reads whatever it holds then.
   * Keyed weakly by the array (an ephemeron: the tensor's hold on its array does not keep the entry
   * alive), so nothing is held after the caller lets the array go. (onnxruntime-web's proxy worker,
   * `env.wasm.proxy`, which diffgraph leaves off, would transfer fed arrays away: a kept array, here
   * or the loop's, would then be empty for the next run.)
   */
  private readonly tensorOf = new WeakMap<Float32Array, { dims: readonly number[]; tensor: OrtTensorLike }>();
  /**
   * A session made for its first run's sizes (`pinFirst`): per input, the size each pinned axis must
   * have (−1: free), for the inputs with a pinned axis. Feeds of other sizes go to `unpinned`.
   */
  private pinnedAxes?: ReadonlyMap<string, readonly number[]>;
  /** The model's second session, of the file as it is (its symbolic axes free), made for the first run that does not fit the pinned one. */
  private unpinnedModel?: OnnxModel;

  constructor(
    readonly file: string,
    /** Inputs and outputs as the file declares them (`readOnnxGraph`); the session's replace them once it exists. */
    inputs: readonly IOInfo[],
    private readonly declaredOutputs: readonly IOInfo[],
    /**
     * Creates the session: called on the first `run` or `ready()`, again after a failed attempt;
     * `pins`: symbolic axes fixed to sizes for this session (`pinFirst`).
     */
    private readonly open: (pins?: Readonly<Record<string, number>>) => Promise<OpenedSession>,
    /**
     * Create the session for the sizes of the first run's feeds (`OnnxRuntimeOptions.pinShapes`): its
     * symbolic axes fixed to them, so onnxruntime folds the shapes and plans the buffers at creation.
     */
    private readonly pinFirst = false,
  ) {
    this.ins = inputs;
    this.outs = declaredOutputs;
    this.byName = new Map(inputs.map((i) => [i.name, i]));
    this.fixedFirstAxis = inputs.some((i) => typeof i.shape[0] === "number");
  }

  /** Shapes and dtypes are always known (read from the file): every `expectInput` check applies. */
  readonly metadata = true;

  get inputs(): readonly IOInfo[] {
    return this.ins;
  }

  /** Outputs: as the file declares them until the session exists, then as onnxruntime infers them (static where it could tell). */
  get outputs(): readonly IOInfo[] {
    return this.outs;
  }

  /** Whether the session has been created. */
  get created(): boolean {
    return this.opened !== undefined;
  }

  private get session(): OpenedSession {
    if (!this.opened) throw new Error(`${this.file}: no session yet (its first run creates it; await model.ready() to create it now)`);
    return this.opened;
  }

  /** The backend that runs it (known once the session exists: "auto" decides then). */
  get backend(): BackendName {
    return this.session.backend;
  }

  get provider(): string {
    return this.session.provider;
  }

  /**
   * Create the session now (a run does it on first use). A file onnxruntime refuses is an error
   * naming it (`…: is not a valid ONNX model or is truncated (…)`), as at load before sessions were
   * created on first use; a failed attempt is not kept, so a later run tries again.
   */
  async ready(): Promise<this> {
    return this.readyFor(undefined);
  }

  private async readyFor(pins: Readonly<Record<string, number>> | undefined): Promise<this> {
    if (this.opened) return this;
    if (this.released) throw new Error(`${this.file}: the model was released`);
    const p = (this.opening ??= (async () => {
      let opened: OpenedSession;
      let made = pins;
      try {
        opened = await this.open(pins);
      } catch (err) {
        if (!pins) throw err;
        // Refused for those sizes (the edit, or onnxruntime's shape inference with them): the file
        // as it is still loads, and its failure, if any, is the one to report.
        made = undefined;
        opened = await this.open();
      }
      this.adopt(opened, made);
      return opened;
    })().catch((err) => {
      this.opening = undefined;
      throw err;
    }));
    await p;
    return this;
  }

  /** The session's own view of inputs and outputs (onnxruntime's shape inference fills output axes the file left symbolic). */
  private adopt(s: OpenedSession, pins: Readonly<Record<string, number>> | undefined): void {
    const names = (l: readonly IOInfo[]) => l.map((i) => i.name).join(", ");
    const sIn = s.session.inputNames.join(", ");
    if (sIn !== names(this.ins)) {
      void s.session.release();
      throw new ModelFileError(this.file, `onnxruntime reads inputs (${sIn}) where the file declares (${names(this.ins)})`);
    }
    const fromSession = (list: readonly OrtValueMetadata[] | undefined, declared: readonly IOInfo[]): readonly IOInfo[] =>
      declared.map((io) => {
        const m = list?.find((x) => x.name === io.name);
        if (!m || !m.isTensor || !m.shape || m.shape.length !== io.shape.length) return io;
        // An axis fixed by freeDimensions keeps its size; a symbolic one the session resolved takes its number.
        return { ...io, shape: io.shape.map((d, k) => (typeof d === "string" && typeof m.shape![k] === "number" ? (m.shape![k] as number) : d)) };
      });
    // A session made for its first run's sizes resolves axes the model leaves free for other sizes:
    // the outputs stay as the file declares them.
    if (!pins) this.outs = fromSession(s.session.outputMetadata, this.outs);
    else {
      const axes = new Map<string, number[]>();
      for (const io of this.ins) {
        const want = io.shape.map((d) => (typeof d === "string" && Object.hasOwn(pins, d) ? pins[d]! : -1));
        if (want.some((w) => w >= 0)) axes.set(io.name, want);
      }
      if (axes.size) this.pinnedAxes = axes;
    }
    this.opened = s;
  }

  /**
   * The sizes a first run's feeds give the model's named symbolic axes: every named axis of a fed
   * input, unless two feeds disagree on it (that axis is left free). Undefined: nothing to pin.
   */
  private pinsFor(feeds: Record<string, Feed>): Record<string, number> | undefined {
    // No prototype: an axis may be named "constructor" or "__proto__".
    const pins = Object.create(null) as Record<string, number>;
    const clash = new Set<string>();
    for (const name in feeds) {
      const io = this.byName.get(name);
      const dims = feeds[name]!.dims;
      if (!io || io.shape.length !== dims.length) return undefined; // runDirect's own error names it
      io.shape.forEach((d, k) => {
        if (typeof d !== "string" || d === "") return;
        const size = dims[k]!;
        if (!Number.isSafeInteger(size) || size < 1 || (Object.hasOwn(pins, d) && pins[d] !== size)) clash.add(d); // an empty axis is not pinned
        else pins[d] = size;
      });
    }
    for (const d of clash) delete pins[d];
    return Object.keys(pins).length ? pins : undefined;
  }

  /** Whether feeds have the sizes the pinned session was made for (always, without pins). Once per call: plain loops. */
  private fits(feeds: Record<string, Feed>): boolean {
    const axes = this.pinnedAxes;
    if (!axes) return true;
    for (const name in feeds) {
      const want = axes.get(name);
      if (!want) continue;
      const dims = feeds[name]!.dims;
      for (let k = 0; k < want.length; k++) if (want[k]! >= 0 && dims[k] !== want[k]) return false;
    }
    return true;
  }

  /** The file's unpinned session, for feeds the pinned one was not made for. */
  private unpinned(): OnnxModel {
    // After release() a late run must not make a session nothing would release.
    if (this.released) throw new Error(`${this.file}: the model was released`);
    return (this.unpinnedModel ??= new OnnxModel(this.file, this.ins, this.declaredOutputs, () => this.open()));
  }

  input(name: string): IOInfo {
    const io = this.byName.get(name);
    if (!io) throw new ModelFileError(this.file, `has no input "${name}" (inputs: ${this.inputs.map((i) => i.name).join(", ")})`);
    return io;
  }

  /**
   * The input a plugin's slot needs, checked: present, of the given rank and dtype (where the
   * backend reports metadata). The error names the file: a model in the wrong slot, or a file
   * exported for another purpose, fails at load and not on the first generation.
   */
  expectInput(name: string, want: IOExpectation = {}): IOInfo {
    return this.expect("input", this.input(name), want);
  }

  expectOutput(name: string, want: IOExpectation = {}): IOInfo {
    const io = this.outputs.find((o) => o.name === name);
    if (!io) throw new ModelFileError(this.file, `has no output "${name}" (outputs: ${this.outputs.map((o) => o.name).join(", ") || "none"})`);
    return this.expect("output", io, want);
  }

  private expect(kind: "input" | "output", io: IOInfo, want: IOExpectation): IOInfo {
    const ranks = want.rank === undefined ? undefined : typeof want.rank === "number" ? [want.rank] : want.rank;
    if (ranks && !ranks.includes(io.shape.length)) {
      throw new ModelFileError(this.file, `${kind} "${io.name}" has rank ${io.shape.length} [${io.shape.join(",")}], expected rank ${ranks.join(" or ")}${want.what ? ` (${want.what})` : ""}`);
    }
    if (want.types && !want.types.includes(io.type)) {
      throw new ModelFileError(this.file, `${kind} "${io.name}" has dtype ${io.type}, expected ${want.types.join(" or ")}${want.what ? ` (${want.what})` : ""}`);
    }
    return io;
  }

  hasInput(name: string): boolean {
    return this.byName.has(name);
  }

  /**
   * Run with feeds converted to each input's declared dtype; float outputs come back as float32
   * `Tensor`s. A model exported with a fixed batch (SD-Turbo's browser exports take one image) runs
   * a larger batch in slices of that size: feeds with the batch's row count are cut, the others
   * (a [1] timestep) are passed whole, and the outputs are joined again.
   */
  run(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    // Once per denoising step (bench/overhead.ts counts what it costs): plain loops, and no async
    // layer of its own where it only hands on runOnce's promise (each one is a measured cost).
    if (!this.fixedFirstAxis) return this.runOnce(feeds, outputNames);
    return this.runSliced(feeds, outputNames);
  }

  private async runSliced(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    let rows = -Infinity;
    for (const name in feeds) rows = Math.max(rows, feeds[name]!.dims[0] ?? 1);
    // The batch is what the row-carrying feeds share; a fixed first axis on those (not on a [1] timestep) bounds it.
    let fixed: number | undefined;
    let mixed = false;
    for (const name in feeds) {
      if (feeds[name]!.dims[0] !== rows) continue;
      const d = this.input(name).shape[0];
      if (typeof d !== "number") continue;
      if (fixed === undefined) fixed = d;
      else if (d !== fixed) mixed = true;
    }
    if (fixed === undefined || rows <= fixed || rows % fixed !== 0 || mixed) {
      return this.runOnce(feeds, outputNames);
    }
    const parts: Record<string, Tensor>[] = [];
    for (let at = 0; at < rows; at += fixed) {
      const slice: Record<string, Feed> = {};
      for (const [name, f] of Object.entries(feeds)) slice[name] = f.dims[0] === rows ? sliceFeed(f, at, at + fixed) : f;
      parts.push(await this.runOnce(slice, outputNames));
    }
    const out: Record<string, Tensor> = {};
    for (const name of Object.keys(parts[0]!)) {
      const all = parts.map((p) => p[name]!);
      const data = new Float32Array(all.reduce((n, t) => n + t.data.length, 0));
      let off = 0;
      for (const t of all) {
        data.set(t.data, off);
        off += t.data.length;
      }
      out[name] = { dims: [all.reduce((n, t) => n + t.dims[0]!, 0), ...all[0]!.dims.slice(1)], data };
    }
    return out;
  }

  /**
   * WebGPU residency (onnxruntime-web's WebGPU provider, `gpuResidency`): the text encoder's outputs
   * as the UNet takes them (`RESIDENT_INPUTS`), fed the same array as in the previous call — the
   * same every step of a run, and every run of a prompt the node cache serves — are uploaded once
   * into a GPU buffer and reused; outputs stay
   * on the GPU (`preferredOutputLocation: "gpu-buffer"`) and only those asked for are read back —
   * SDXL's text towers return every layer's states, of which one is used.
   */
  private readonly resident = new Map<string, { src: ArrayLike<number>; dims: readonly number[]; seen: number; tensor?: OrtTensorLike }>();
  private residentBytes = 0;
  /** Resident tensors replaced by newer feeds, freed inside the next serialized run (after every earlier one). */
  private retired: OrtTensorLike[] = [];

  private async residentFeed(io: IOInfo, value: Feed): Promise<OrtTensorLike | undefined> {
    const { gpu, ort } = this.session;
    if (!gpu || !RESIDENT_INPUTS.has(io.name) || "ints" in value || (io.type !== "float32" && io.type !== "float16") || !ort.Tensor.fromGpuBuffer) return undefined;
    const prev = this.resident.get(io.name);
    if (!prev || !sameFeed(prev, value.data, value.dims)) {
      // A run queued before this call may still use the old buffer: it is freed once those have run.
      if (prev?.tensor) this.retired.push(prev.tensor);
      this.resident.set(io.name, { src: value.data, dims: value.dims.slice(), seen: 1 });
      return undefined;
    }
    if (prev.tensor) return prev.tensor;
    const device = (await ort.env?.webgpu?.device) as GpuDeviceLike | undefined;
    const usage = (globalThis as { GPUBufferUsage?: { STORAGE: number; COPY_SRC: number; COPY_DST: number } }).GPUBufferUsage;
    if (!device || !usage) return undefined;
    const bytes = io.type === "float16" ? f32ToF16(value.data) : value.data;
    const size = Math.ceil(bytes.byteLength / 16) * 16;
    const buffer = device.createBuffer({ size, usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.residentBytes += size;
    prev.tensor = ort.Tensor.fromGpuBuffer(buffer, { dataType: io.type, dims: value.dims, dispose: () => buffer.destroy() });
    return prev.tensor;
  }

  /** Counters of the WebGPU residency: feeds kept on the GPU and the bytes uploaded for them. */
  get residency(): { readonly residentFeeds: number; readonly uploadedBytes: number } {
    return { residentFeeds: [...this.resident.values()].filter((r) => r.tensor).length, uploadedBytes: this.residentBytes };
  }

  /** A session made, off onnxruntime-web's WebGPU provider: straight to runDirect, with no async layer between. */
  private runOnce(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    const s = this.opened;
    if (s && !queuedProvider(s.backend, s.provider) && this.fits(feeds)) return this.runDirect(s.session, feeds, outputNames);
    return this.runOpened(feeds, outputNames);
  }

  /** `runOnce` for a model without its session yet, or on onnxruntime-web's WebGPU provider (its queue, residency). */
  private async runOpened(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    if (!this.opened) {
      for (const name in feeds) this.input(name); // a feed the model does not take fails before its session is made
      await this.readyFor(this.pinFirst ? this.pinsFor(feeds) : undefined);
    }
    if (!this.fits(feeds)) return this.unpinned().run(feeds, outputNames);
    const { serialize, session, gpu, backend, provider } = this.session;
    // Only onnxruntime-web's WebGPU provider, residency on or off, needs its queue and bookkeeping.
    if (!queuedProvider(backend, provider)) return this.runDirect(session, feeds, outputNames);
    const ortFeeds: Record<string, OrtTensorLike> = {};
    for (const [name, value] of Object.entries(feeds)) {
      const io = this.input(name);
      // Only WebGPU residency may wait for the device; elsewhere a feed converts without an await.
      ortFeeds[name] = (gpu ? await this.residentFeed(io, value) : undefined) ?? this.toOrt(io, value);
    }
    const wanted = outputNames ?? this.outputs.map((o) => o.name);
    const free = this.retired.splice(0);
    let out: Record<string, Tensor>;
    try {
      out = await serialize(async () => {
        // WebGPU runs are serialized in order, so every run that could read these has finished.
        for (const t of free) t.dispose?.();
        const result = await session.run(ortFeeds);
        const read: Record<string, Tensor> = {};
        for (const name of wanted) {
          const t = result[name];
          if (!t) throw new ModelFileError(this.file, `produced no output "${name}"`);
          read[name] = { dims: [...t.dims], data: t.location === "gpu-buffer" && t.getData ? toFloat32({ type: t.type, data: await t.getData(true) }) : toFloat32(t) };
        }
        for (const [name, t] of Object.entries(result)) if (!(name in read) && t.location === "gpu-buffer") t.dispose?.();
        return read;
      });
    } catch (err) {
      if (err instanceof ModelFileError) throw err;
      throw this.inferenceFailed(ortFeeds, err);
    }
    return out;
  }

  /** onnxruntime's own failure of a run, as an error naming the file and the shapes it was fed. */
  private inferenceFailed(ortFeeds: Record<string, OrtTensorLike>, err: unknown): ModelFileError {
    const shapes = Object.entries(ortFeeds).map(([k, v]) => `${k}: ${v.type}[${v.dims.join(",")}]`).join("; ");
    return new ModelFileError(this.file, `inference failed with inputs ${shapes}: ${(err as Error).message}`, { cause: err });
  }

  /**
   * `runOnce` off onnxruntime-web's WebGPU provider (onnxruntime-node, WASM): no queue, no resident
   * feeds, nothing to free, outputs read as they come. Once per denoising step, so it allocates as little as it can
   * (`bun run bench` accounts for it: `onnxWrapper`).
   */
  private async runDirect(session: OrtSessionLike, feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    const ortFeeds: Record<string, OrtTensorLike> = {};
    for (const name in feeds) ortFeeds[name] = this.toOrt(this.input(name), feeds[name]!, true);
    let result: Record<string, OrtTensorLike>;
    try {
      result = await session.run(ortFeeds);
    } catch (err) {
      throw this.inferenceFailed(ortFeeds, err);
    }
    const read: Record<string, Tensor> = {};
    const names = outputNames ?? this.outs;
    for (let i = 0; i < names.length; i++) {
      const n = names[i]!;
      const name = typeof n === "string" ? n : n.name;
      const t = result[name];
      if (!t) throw new ModelFileError(this.file, `produced no output "${name}"`);
      read[name] = { dims: t.dims.slice(), data: toFloat32(t) };
    }
    return read;
  }

  /** `reuse`: off the WebGPU queue, a float32 array fed again with the same dims keeps its ORT tensor (`tensorOf`). */
  private toOrt(io: IOInfo, value: Feed, reuse = false): OrtTensorLike {
    const { ort, backend } = this.session;
    const dims = value.dims;
    if (io.shape.length !== dims.length) {
      throw new ModelFileError(this.file, `input "${io.name}" has rank ${io.shape.length} [${io.shape.join(",")}] but got [${dims.join(",")}]`);
    }
    const src: ArrayLike<number> = "ints" in value ? value.ints : value.data;
    switch (io.type) {
      case "float32": {
        if (!(src instanceof Float32Array)) return new ort.Tensor("float32", Float32Array.from(src), dims);
        if (!reuse) return new ort.Tensor("float32", src, dims);
        const last = this.tensorOf.get(src);
        if (last && sameDims(last.dims, dims)) return last.tensor;
        const own = dims.slice(); // onnxruntime keeps the dims array it is given: one the caller cannot change
        const tensor = new ort.Tensor("float32", src, own);
        this.tensorOf.set(src, { dims: own, tensor });
        return tensor;
      }
      case "float16": {
        const bits = f32ToF16(src);
        const t = new ort.Tensor("float16", bits, dims);
        // onnxruntime-common wraps Uint16Array data in a Float16Array where the runtime has one (Bun);
        // onnxruntime-node's N-API binding cannot read a Float16Array under Bun and sees 0 bytes.
        // Hand the native binding the raw bits it wants.
        if (backend === "onnxruntime-node") (t as unknown as { cpuData: Uint16Array }).cpuData = bits;
        return t;
      }
      case "float64":
        return new ort.Tensor("float64", Float64Array.from(src), dims);
      case "int64": {
        const data = new BigInt64Array(src.length);
        for (let i = 0; i < src.length; i++) data[i] = BigInt(Math.round(src[i]!));
        return new ort.Tensor("int64", data, dims);
      }
      case "int32":
        return new ort.Tensor("int32", Int32Array.from(src, (v) => Math.round(v)), dims);
      default:
        throw new ModelFileError(this.file, `input "${io.name}" has dtype ${io.type}, which diffgraph does not feed`);
    }
  }

  async release(): Promise<void> {
    for (const r of this.resident.values()) r.tensor?.dispose?.();
    for (const t of this.retired.splice(0)) t.dispose?.();
    this.resident.clear();
    this.released = true;
    // A session still being created is released once it exists.
    const s = this.opened ?? (await this.opening?.catch(() => undefined));
    this.opened = undefined;
    await Promise.all([s?.session.release(), this.unpinnedModel?.release()]);
  }
}

/** Whether a feed is the one remembered: the same array (not equal values: it may have changed in place) and the same dims. */
function sameFeed(prev: { readonly src: ArrayLike<number>; readonly dims: readonly number[] }, src: ArrayLike<number>, dims: readonly number[]): boolean {
  return prev.src === src && sameDims(prev.dims, dims);
}

/** Rows [start, end) of a feed. */
function sliceFeed(f: Feed, start: number, end: number): Feed {
  const per = f.dims.slice(1).reduce((a, b) => a * b, 1);
  const dims = [end - start, ...f.dims.slice(1)];
  if ("ints" in f) return { dims, ints: Array.prototype.slice.call(f.ints, start * per, end * per) as number[] };
  return { dims, data: f.data.subarray(start * per, end * per) };
}

async function readModelBytes(source: ModelSource, path: string, file: string): Promise<Uint8Array> {
  try {
    return await source.read(path);
  } catch (err) {
    if (err instanceof ModelFileError) throw err;
    throw new ModelFileError(file, `cannot be read (${(err as Error).message})`, { cause: err });
  }
}

/**
 * Bump when what `readOnnxGraph` or `externalDataFiles` reports changes: remembered entries of another
 * format are misses (3: external data found by walking the messages, only where data_location is EXTERNAL).
 */
const ONNX_IO_FORMAT = 3;

const GraphIOSchema = z.object({ name: z.string(), type: z.string(), isTensor: z.boolean(), shape: z.array(z.union([z.number(), z.string()])).readonly() });

/** What an open remembers of an ONNX file (`DigestMemo` kind "onnx-io"), by the file's stamp. */
const RememberedIOSchema = z.object({
  format: z.literal(ONNX_IO_FORMAT),
  inputs: z.array(GraphIOSchema).readonly(),
  outputs: z.array(GraphIOSchema).readonly(),
  externalData: z.array(z.string()).readonly(),
  subgraphs: z.boolean(),
  sha256: z.string().regex(SHA256_HEX),
});
type RememberedIO = z.output<typeof RememberedIOSchema>;

/** A remembered entry, checked field by field; undefined for none, or one that is malformed or of another format. */
export function rememberedIO(text: string | undefined): RememberedIO | undefined {
  if (!text) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const r = RememberedIOSchema.safeParse(v);
  return r.success ? r.data : undefined;
}

/** UNet inputs that hold the text encoder's outputs: the same array every step of a run (never mutated in place). */
const RESIDENT_INPUTS = new Set(["encoder_hidden_states", "text_embeds"]);

/** The part of a WebGPU `GPUDevice` residency uses. */
interface GpuDeviceLike {
  createBuffer(d: { size: number; usage: number }): { destroy(): void };
  readonly queue: { writeBuffer(buffer: unknown, offset: number, data: ArrayBufferLike, dataOffset: number, size: number): void };
}

function toFloat32(t: Pick<OrtTensorLike, "type" | "data">): Float32Array {
  const data = t.data as ArrayLike<number | bigint>;
  if (t.type === "float32") return data as Float32Array;
  if (t.type === "float16") return f16ToF32(data as unknown as Uint16Array | ArrayLike<number>);
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = Number(data[i]);
  return out;
}

function normalizeType(type: string | undefined): string {
  if (!type) return "float32";
  // onnxruntime-node reports "tensor(float)"-style names in some builds; normalise to ORT-JS names.
  const m = /^tensor\((\w+)\)$/.exec(type);
  const t = m ? m[1]! : type;
  return ({ float: "float32", double: "float64" } as Record<string, string>)[t] ?? t;
}

/** How to load one model. */
export interface LoadOptions {
  /**
   * onnxruntime's `freeDimensionOverrides`: symbolic axes, by the name the model gives them
   * (`batch_size`, `height`, …), fixed to a size — what the onnxruntime-web WebGPU demo does for
   * SD-Turbo. The model then reports those axes at that size, so a fixed batch runs in slices and
   * a fixed latent size is the only image size the pipeline takes.
   */
  readonly freeDimensions?: Readonly<Record<string, number>>;
  /** Which thread pool the session gets (`core/threads.ts`): the noise predictor's, or one thread (default). The file's first load decides. */
  readonly role?: SessionRole;
}

export interface OnnxRuntimeOptions {
  readonly backends: OnnxBackends;
  readonly executionProvider?: ExecutionProvider;
  readonly log?: (message: string) => void;
  /**
   * The thread policy (`core/threads.ts`) for onnxruntime-node's CPU provider: a number is the noise
   * predictor's intra-op threads (the other models keep 1). Default: the noise predictor gets every
   * core, the others one thread; no spinning, no pinning.
   */
  readonly threads?: number | ThreadPolicyOptions;
  /**
   * Create onnxruntime-node's environment in the background when this runtime is made
   * (`OnnxBackends.prewarm`, where the adapter has it: Bun), overlapping the caller's opening of a
   * pipeline instead of delaying the first session (≈ 20 ms here). Default true.
   */
  readonly prewarm?: boolean;
  /** onnxruntime-web WebGPU: keep repeated inputs and unread outputs on the GPU (default true). */
  readonly gpuResidency?: boolean;
  /**
   * Create each model's session for the sizes its first run feeds: the model's named symbolic axes
   * (`batch`, `sequence`, …) are fixed to them, so onnxruntime folds the shape arithmetic an export
   * computes at run time and plans its buffers at creation (emoji-64's UNet: 663 → 541 nodes, its
   * creation from the optimized-graph cache ≈ 2× quicker here). A later run with other sizes gets a
   * second session of the unpinned model, and a model onnxruntime refuses with those sizes is made as
   * the file is. For a process that runs one shape (the `generate` CLI); a server, which keeps its
   * sessions and sees many shapes, leaves it off (default false). Applies to models without external
   * weights of up to `pinMaxModelBytes`; a session made by `ready()` before any run, or by a first run
   * whose feeds do not match the model's ranks, is unpinned.
   */
  readonly pinShapes?: boolean;
  /** The largest model file `pinShapes` applies to (default `PIN_MAX_MODEL_BYTES`, 256 MiB). */
  readonly pinMaxModelBytes?: number;
  /**
   * The optimized-graph cache (onnxruntime-node CPU): a folder, or false for none. Default: the
   * adapter's (`DIFFGRAPH_CACHE_DIR`, else `$XDG_CACHE_HOME/diffgraph/onnx`, else `~/.cache/diffgraph/onnx`).
   */
  readonly graphCache?: string | false;
}

/** A session created: its file, role and the options it was created with (`OnnxRuntime.created`). */
export interface CreatedSession {
  readonly file: string;
  readonly role: SessionRole;
  readonly backend: BackendName;
  readonly provider: string;
  /** "cache" when loaded from the optimized-graph cache, "model" otherwise. */
  readonly from: "model" | "cache";
}

/**
 * Loads ONNX models through the chosen backend and caches one model per (file, provider). A model's
 * session is created on its first run; provider "auto" then tries the table above in order and logs
 * why each skipped entry was skipped.
 */
export class OnnxRuntime {
  readonly executionProvider: ExecutionProvider;
  /** The thread policy every session is created under. */
  readonly threads: ThreadPolicy;
  /** The optimized-graph cache, where this host has one and it is on. */
  readonly graphCache: OptimizedGraphCache | undefined;
  private readonly sessions = new Map<string, Promise<OnnxModel>>();
  private readonly unavailable = new Map<string, string>();
  private readonly announced = new Set<string>();
  /** Backend/provider pairs that have created a session in this runtime. */
  private readonly working = new Set<string>();
  private readonly createdList: CreatedSession[] = [];
  private readonly log: (message: string) => void;

  constructor(private readonly options: OnnxRuntimeOptions) {
    this.executionProvider = options.executionProvider ?? "auto";
    if (!EXECUTION_PROVIDERS.includes(this.executionProvider)) {
      throw new RangeError(`executionProvider must be one of ${EXECUTION_PROVIDERS.join(", ")}, got "${this.executionProvider}"`);
    }
    this.log = options.log ?? (() => {});
    const cores = options.backends.cores ?? (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
    this.threads = threadPolicy(options.threads, cores);
    this.graphCache = options.graphCache === false ? undefined : options.backends.graphCache?.(options.graphCache);
    if (options.prewarm !== false && options.backends.native && this.executionProvider !== "wasm") options.backends.prewarm?.();
  }

  get host(): string {
    return this.options.backends.host;
  }

  /** The backend/provider pairs sessions were created on so far ("onnxruntime-web/webgpu"): what `auto` chose. */
  get providersInUse(): readonly string[] {
    return [...this.working];
  }

  /** Every session created so far, in order: what a run loaded. */
  get created(): readonly CreatedSession[] {
    return [...this.createdList];
  }

  /**
   * Read and check `path` inside `source` and return its model (the same one for the same file):
   * inputs and outputs as the file declares them; the session is created on its first run.
   */
  load(source: ModelSource, path: string, options: LoadOptions = {}): Promise<OnnxModel> {
    const file = `${source.root}/${path}`;
    const fixed = options.freeDimensions && Object.keys(options.freeDimensions).length ? options.freeDimensions : undefined;
    for (const [name, size] of Object.entries(fixed ?? {})) {
      if (!Number.isInteger(size) || size < 1) return Promise.reject(new RangeError(`freeDimensions.${name}: must be a positive whole number, got ${size}`));
    }
    const role = options.role ?? "auxiliary";
    // One model per file: a later load of the same file (a benchmark asking for the pipeline's UNet)
    // gets the same model and session, whatever role it names; the first load's role stands.
    const key = `${file}|${this.executionProvider}${fixed ? `|${JSON.stringify(Object.entries(fixed).sort())}` : ""}`;
    let p = this.sessions.get(key);
    if (!p) {
      p = this.read(source, path, file, role, fixed);
      this.sessions.set(key, p);
      p.catch(() => this.sessions.delete(key)); // a failed load can be retried after the file is fixed
    }
    return p;
  }

  private async read(source: ModelSource, path: string, file: string, role: SessionRole, fixed?: Readonly<Record<string, number>>): Promise<OnnxModel> {
    // A file unchanged since an earlier open (same stamp; behind a manifest, also verified) need not
    // be read now: its inputs, outputs and external data were remembered (`DigestMemo` "onnx-io"), and
    // its bytes are read only if a session needs them (not when the optimized-graph cache has it).
    const memo = source.stamp ? source.digests : undefined;
    const stamp = memo ? await source.stamp!(path) : undefined;
    const known = stamp !== undefined ? rememberedIO(await memo!.get(stamp, "onnx-io")) : undefined;
    let graph: { readonly inputs: readonly GraphIO[]; readonly outputs: readonly GraphIO[]; readonly subgraphs: boolean };
    let locations: string[];
    let sha256 = source.sha256Of?.(path);
    let bytes: () => Promise<Uint8Array>;
    let size: number;
    if (known) {
      size = stampSize(stamp!);
      graph = known;
      locations = [...known.externalData];
      sha256 ??= known.sha256;
      // Read later, the file must still be the one opened: what was remembered (inputs, outputs, the
      // digest the graph cache keys on) describes that state only.
      const current = async () => {
        const b = await readModelBytes(source, path, file);
        if ((await source.stamp!(path)) !== stamp) {
          throw new ModelFileError(file, "changed since the pipeline was opened (its size, times or inode are not those it was checked with): open the pipeline again");
        }
        return b;
      };
      let later: Promise<Uint8Array> | undefined;
      // A failed read is not kept: the next run reads again (the file may have been put back).
      bytes = () => (later ??= current().catch((err) => ((later = undefined), Promise.reject(err))));
    } else {
      const b = await readModelBytes(source, path, file);
      if (b.length < 16) throw new ModelFileError(file, `is ${b.length} bytes: too short to be an ONNX model (truncated?)`);
      // An ONNX file is a protobuf ModelProto; its first field is ir_version (tag 0x08).
      if (b[0] !== 0x08) throw new ModelFileError(file, "is not an ONNX model (does not start with a ModelProto ir_version field)");
      try {
        graph = readOnnxGraph(b);
        locations = externalDataFiles(b);
      } catch (err) {
        if (!(err instanceof OnnxFormatError)) throw err;
        throw new ModelFileError(file, `is not a valid ONNX model or is truncated (${err.message})`, { cause: err });
      }
      size = b.length;
      bytes = () => Promise.resolve(b);
      // Remember what was read, if the file kept its stamp through the read (no write in between).
      if (stamp !== undefined && (await source.stamp!(path)) === stamp) {
        sha256 ??= await sha256Hex(b);
        const io: RememberedIO = { format: ONNX_IO_FORMAT, inputs: graph.inputs, outputs: graph.outputs, externalData: locations, subgraphs: graph.subgraphs, sha256 };
        await memo!.set(stamp, JSON.stringify(io), "onnx-io");
      }
    }
    // Weights stored beside the graph (`model.onnx_data`, required above 2 GB): onnxruntime-node opens
    // them itself from a server's disk (the model is then created from its path); otherwise they are
    // read through the same source (fetched in a browser) and handed over as `externalData`.
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
    for (const location of locations) {
      if (location.includes("..") || location.startsWith("/")) throw new ModelFileError(file, `refers to external data "${location}" outside its folder`);
      if (!(await source.exists(dir + location))) throw new ModelFileError(`${source.root}/${dir}${location}`, `file not found (${file} keeps its weights there as external data)`);
    }
    // An axis fixed by freeDimensions is reported at its size, so plugins treat it as static.
    const io = (list: readonly GraphIO[]): IOInfo[] =>
      list.map((g) => ({ name: g.name, type: g.isTensor ? g.type : "non-tensor", shape: g.shape.map((d) => (typeof d === "string" && fixed?.[d] !== undefined ? fixed[d]! : d)) }));
    const open = (pins?: Readonly<Record<string, number>>) => {
      const sizes = pins || fixed ? { ...pins, ...fixed } : undefined;
      return this.createSession({ source, path, file, role, bytes, locations, dir, subgraphs: graph.subgraphs, pinned: pins !== undefined, ...(sizes ? { fixed: sizes } : {}), ...(sha256 ? { sha256 } : {}) });
    };
    // Pinned where the bytes are what onnxruntime is handed (onnxruntime-node opens a model with
    // external weights from its path, which cannot be edited on the way), and where a copy per shape
    // in the graph cache is small (PIN_MAX_MODEL_BYTES).
    return new OnnxModel(file, io(graph.inputs), io(graph.outputs), open, this.options.pinShapes === true && locations.length === 0 && size <= (this.options.pinMaxModelBytes ?? PIN_MAX_MODEL_BYTES));
  }

  private async createSession(m: {
    source: ModelSource;
    path: string;
    file: string;
    role: SessionRole;
    bytes: () => Promise<Uint8Array>;
    locations: readonly string[];
    dir: string;
    subgraphs: boolean;
    /** Made for a first run's sizes (`pinShapes`): a failure is the attempt's, retried by the model as the file is. */
    pinned: boolean;
    fixed?: Readonly<Record<string, number>>;
    sha256?: string;
  }): Promise<OpenedSession> {
    const { source, path, file, bytes, locations, dir, fixed } = m;
    let external: Promise<{ path: string; data: Uint8Array }[]> | undefined;
    const readExternal = () => (external ??= Promise.all(locations.map(async (location) => ({ path: location, data: await source.read(dir + location) }))));

    const errors: string[] = [];
    for (const [backend, provider] of PLAN[this.executionProvider]) {
      const skip = this.unavailable.get(`${backend}/${provider}`);
      if (skip) {
        errors.push(`${backend}/${provider}: ${skip}`);
        continue;
      }
      let ort: OrtModuleLike;
      try {
        ort = await this.loadBackend(backend, provider);
      } catch (err) {
        this.markUnavailable(backend, provider, (err as Error).message, errors);
        continue;
      }
      const refused = await this.probe(ort, backend, provider);
      if (refused) {
        this.markUnavailable(backend, provider, shortReason(refused), errors);
        continue;
      }
      let session: OrtSessionLike;
      let from: CreatedSession["from"] = "model";
      const serialize = this.serializerFor(backend, provider);
      try {
        const options = this.sessionOptions(backend, provider, m.role);
        if (fixed) options.freeDimensionOverrides = { ...fixed };
        let model: Uint8Array | string | undefined;
        if (locations.length && backend === "onnxruntime-node" && source.localPath) model = source.localPath(path);
        else if (locations.length) options.externalData = await readExternal();
        const cache = this.cacheFor(backend, provider, locations.length > 0);
        const entry = cache ? await this.cacheEntry(cache, ort, provider, options, m) : undefined;
        let cached: OrtSessionLike | undefined;
        const hit = entry?.cachedFile;
        if (entry && hit) {
          try {
            // Optimized once already: loading it optimizes nothing again.
            cached = await serialize(() => ort.InferenceSession.create(hit, { ...options, graphOptimizationLevel: "disabled" }));
            from = "cache";
            if (entry.unchanged && !(await entry.unchanged())) {
              // Written over while onnxruntime read it (another process rebuilding the entry): what
              // loaded may not be what was checked. Built from the model instead, and cached anew.
              await cached.release();
              cached = undefined;
              from = "model";
              this.log(`onnx: cached optimized graph ${entry.path} of ${file} changed while it loaded; building it from the model`);
            }
          } catch (err) {
            this.log(`onnx: cached optimized graph ${entry.path} of ${file} did not load (${firstLine((err as Error).message ?? String(err))}); rebuilding it`);
            await entry.discard();
          }
        }
        if (cached) session = cached;
        else {
          // onnxruntime warns on stderr that an "all"-optimized graph is for this machine only: the cache is keyed on it.
          const writing = entry ? { ...options, optimizedModelFilePath: entry.tempPath, logSeverityLevel: 3, extra: { ...(options.extra as Record<string, string> | undefined), ...entry.writeConfig } } : options;
          // onnxruntime-node has no freeDimensionOverrides (its binding ignores the option): the axes are
          // made static in the bytes it is handed instead (the cache key names them all the same).
          const from = model ?? (fixed && backend === "onnxruntime-node" ? pinSymbolicDims(await bytes(), fixed) : await bytes());
          session = await serialize(() => ort.InferenceSession.create(from, writing));
          const why = await entry?.commit((note) => this.log(`onnx: optimized graph of ${file}: ${note}`));
          if (why) this.log(`onnx: optimized graph of ${file} not cached (${why})`);
        }
      } catch (err) {
        // Reading or checking the file itself failed (lazily, on a remembered model): that says nothing of the backend.
        if (err instanceof ModelFileError) throw err;
        const msg = (err as Error).message ?? String(err);
        // Nor does a refusal of the axes pinned for a run (the model retries as the file is, OnnxModel.readyFor).
        if (m.pinned) throw new ModelFileError(file, `refused with its axes fixed to ${JSON.stringify(fixed)} (${firstLine(msg)})`, { cause: err });
        // A backend that has already created a session works: its failure is this file's fault, and
        // must not mark the backend unavailable for every file after it (one bad model among several).
        const fileFault = /protobuf|parse|Invalid model|Load model|failed to load model|ModelProto|graph/i.test(msg) && !/adapter|webgpu|device/i.test(msg);
        if (fileFault || this.working.has(`${backend}/${provider}`)) {
          throw new ModelFileError(file, `is not a valid ONNX model or is truncated (${firstLine(msg)})`, { cause: err });
        }
        this.markUnavailable(backend, provider, shortReason(msg), errors);
        continue;
      }
      this.working.add(`${backend}/${provider}`);
      this.createdList.push({ file, role: m.role, backend, provider, from });
      if (this.executionProvider === "auto" && errors.length > 0 && !this.announced.has(`${backend}/${provider}`)) {
        this.announced.add(`${backend}/${provider}`);
        this.log(`onnx: executionProvider "auto" falls back to ${backend}/${provider} (${errors.join("; ")})`);
      }
      return { backend, provider, ort, session, serialize, gpu: this.residency(backend, provider) };
    }
    throw new Error(`no ONNX backend could load ${file} with executionProvider "${this.executionProvider}" on ${this.host}: ${errors.join("; ")}`);
  }

  /**
   * The cache applies where onnxruntime writes the optimized graph to a file: onnxruntime-node's CPU
   * provider, for a model whose weights are inside it. A model with its own external weights (above
   * 2 GB) is left out: its optimized graph would copy gigabytes into the cache folder, which no
   * measurement here has shown to pay for itself.
   */
  private cacheFor(backend: BackendName, provider: string, externalData: boolean): OptimizedGraphCache | undefined {
    return backend === "onnxruntime-node" && provider === "cpu" && !externalData ? this.graphCache : undefined;
  }

  private async cacheEntry(cache: OptimizedGraphCache, ort: OrtModuleLike, provider: string, options: Record<string, unknown>, m: { bytes: () => Promise<Uint8Array>; sha256?: string; file: string; subgraphs: boolean }): Promise<OptimizedGraphEntry | undefined> {
    try {
      return await cache.entry(m.sha256 ? undefined : await m.bytes(), { file: m.file, subgraphs: m.subgraphs, ...(m.sha256 ? { sha256: m.sha256 } : {}), ...graphCacheKey(ort, provider, options) });
    } catch (err) {
      if (err instanceof ModelFileError) throw err; // the model's own read failed, not the cache
      this.log(`onnx: optimized-graph cache ${cache.dir} unusable for ${m.file} (${firstLine((err as Error).message)}); loading without it`);
      return undefined;
    }
  }

  private readonly chains = new Map<string, Promise<unknown>>();

  /**
   * onnxruntime-web's WebGPU provider refuses a second session creation or run while one is in
   * flight ("another WebGPU EP inference session is being created"); queue its calls one at a time.
   * Native sessions run concurrently.
   */
  private serializerFor(backend: BackendName, provider: string): <T>(work: () => Promise<T>) => Promise<T> {
    if (!queuedProvider(backend, provider)) return (work) => work();
    const key = `${backend}/${provider}`;
    return <T>(work: () => Promise<T>) => {
      const prev = this.chains.get(key) ?? Promise.resolve();
      const next = prev.then(work, work);
      this.chains.set(key, next.catch(() => {}));
      return next;
    };
  }

  private markUnavailable(backend: BackendName, provider: string, why: string, errors: string[]): void {
    this.unavailable.set(`${backend}/${provider}`, why);
    errors.push(`${backend}/${provider}: ${why}`);
  }

  private async loadBackend(backend: BackendName, provider: string): Promise<OrtModuleLike> {
    const { native, web } = this.options.backends;
    if (backend === "onnxruntime-node") {
      if (!native) throw new Error(`not available on ${this.host}`);
      return native();
    }
    if (!web) throw new Error(`not available on ${this.host}`);
    if (provider === "webgpu" && !(globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) {
      throw new Error("navigator.gpu is missing (no WebGPU in this runtime)");
    }
    return web(provider as "wasm" | "webgpu");
  }

  private readonly probes = new Map<string, Promise<string | null>>();
  private readonly probeSessions: OrtSessionLike[] = [];

  /**
   * Whether onnxruntime-node's WebGPU provider can make a session here, tried once per runtime with a
   * one-node model (`probeModelBytes`) before any real model is read for it: on a machine without an
   * adapter (most servers) its refusal then costs ≈ 1 ms, where learning it from the first model
   * (emoji-64's text encoder, under `auto`) read 5 MB and fixed its axes first (≈ 20 ms of a cold
   * `generate` here). Null when it works; the other providers are not probed.
   */
  private probe(ort: OrtModuleLike, backend: BackendName, provider: string): Promise<string | null> | null {
    if (backend !== "onnxruntime-node" || provider !== "webgpu" || this.working.has(`${backend}/${provider}`)) return null;
    let p = this.probes.get(provider);
    if (!p) {
      // Kept until dispose(): releasing the provider's only session could tear its device down just
      // before the first real one needs it. A throw, synchronous or not, is a refusal.
      p = Promise.resolve()
        .then(() => ort.InferenceSession.create(probeModelBytes(), { executionProviders: [provider], logSeverityLevel: 3 }))
        .then(
          (session) => ((this.probeSessions.push(session), null)),
          (err: unknown) => (err as Error)?.message ?? String(err),
        );
      this.probes.set(provider, p);
    }
    return p;
  }

  private residency(backend: BackendName, provider: string): boolean {
    return queuedProvider(backend, provider) && this.options.gpuResidency !== false;
  }

  private sessionOptions(backend: BackendName, provider: string, role: SessionRole): Record<string, unknown> {
    const opts: Record<string, unknown> = { executionProviders: [provider], graphOptimizationLevel: "all" };
    if (this.residency(backend, provider)) opts.preferredOutputLocation = "gpu-buffer";
    // onnxruntime-web has one thread count for all its sessions (env.wasm.numThreads, the adapter's).
    if (backend === "onnxruntime-node" && provider === "cpu") Object.assign(opts, nativeThreadOptions(role === "noise-predictor" ? this.threads.noisePredictor : this.threads.auxiliary));
    return opts;
  }

  async dispose(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    const probes = this.probeSessions.splice(0);
    await Promise.all([...all.map(async (p) => (await p.catch(() => null))?.release()), ...probes.map((s) => s.release().catch(() => {}))]);
  }
}

/**
 * onnxruntime-web's WebGPU provider: its calls are queued one at a time (`serializerFor`), and only it
 * keeps feeds and outputs on the GPU (`gpuResidency`); every other provider runs directly.
 */
function queuedProvider(backend: BackendName, provider: string): boolean {
  return backend === "onnxruntime-web" && provider === "webgpu";
}

/** ORT errors carry a source path and a lambda signature before the reason; keep the reason. */
function shortReason(msg: string): string {
  const m = /(Failed to [^.]*|No [a-z ]*adapter[^.]*|not (?:available|supported)[^.]*)/i.exec(msg);
  return (m ? m[1]! : firstLine(msg)).trim().slice(0, 160);
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.slice(0, 300);
}
