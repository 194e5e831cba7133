/**
 * One interface over onnxruntime-node (native, Bun/Node servers) and onnxruntime-web (WASM and
 * WebGPU: Deno, browsers, edge). The core never imports either package: the runtime adapter
 * (`core/adapters/*`) hands in loaders, and this module picks a backend and an execution provider
 * from one table, converts dtypes at the boundary (float16, int64, int32) and caches sessions per
 * model file.
 */
import { f16ToF32, f32ToF16 } from "./float16.ts";
import { ModelFileError, type ModelSource } from "./model-source.ts";
import type { Tensor } from "./tensor.ts";

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
  readonly env?: { wasm?: { numThreads?: number; wasmPaths?: unknown }; logLevel?: string; webgpu?: { device?: Promise<unknown> | unknown } };
}

/** What a runtime adapter provides: how to load each flavour, and what the host can do. */
export interface OnnxBackends {
  /** onnxruntime-node; absent on Deno-without-node-addons, browsers and edge workers. */
  readonly native?: () => Promise<OrtModuleLike>;
  /** onnxruntime-web with the WASM and (where `navigator.gpu` exists) WebGPU providers. */
  readonly web?: (provider: "wasm" | "webgpu") => Promise<OrtModuleLike>;
  /** Host name for messages: "bun", "node", "deno", "browser". */
  readonly host: string;
}

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

export class OnnxModel implements OnnxModelInfo {
  constructor(
    readonly file: string,
    readonly backend: BackendName,
    readonly provider: string,
    readonly inputs: readonly IOInfo[],
    readonly outputs: readonly IOInfo[],
    private readonly ort: OrtModuleLike,
    private readonly session: OrtSessionLike,
    private readonly serialize: <T>(work: () => Promise<T>) => Promise<T> = (work) => work(),
    /** Whether the backend reported input/output shapes and dtypes (checks are skipped where not). */
    readonly metadata = true,
    /** onnxruntime-web on WebGPU with residency on: repeated inputs stay on the GPU, outputs are read back on demand. */
    private readonly gpu = false,
  ) {}

  input(name: string): IOInfo {
    const io = this.inputs.find((i) => i.name === name);
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
    if (!this.metadata) return io;
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
    return this.inputs.some((i) => i.name === name);
  }

  /**
   * Run with feeds converted to each input's declared dtype; float outputs come back as float32
   * `Tensor`s. A model exported with a fixed batch (SD-Turbo's browser exports take one image) runs
   * a larger batch in slices of that size: feeds with the batch's row count are cut, the others
   * (a [1] timestep) are passed whole, and the outputs are joined again.
   */
  async run(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    const rows = Math.max(...Object.values(feeds).map((f) => f.dims[0] ?? 1));
    // The batch is what the row-carrying feeds share; a fixed first axis on those (not on a [1] timestep) bounds it.
    const batchAxes = Object.entries(feeds).filter(([, f]) => f.dims[0] === rows).map(([name]) => this.input(name).shape[0]);
    const sizes = batchAxes.filter((d): d is number => typeof d === "number");
    const fixed = this.metadata && sizes.length ? sizes[0]! : undefined;
    if (fixed === undefined || rows <= fixed || rows % fixed !== 0 || sizes.some((d) => d !== fixed)) {
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
   * same every step of a run — are uploaded once into a GPU buffer and reused; outputs stay
   * on the GPU (`preferredOutputLocation: "gpu-buffer"`) and only those asked for are read back —
   * SDXL's text towers return every layer's states, of which one is used.
   */
  private readonly resident = new Map<string, { src: ArrayLike<number>; dims: string; seen: number; tensor?: OrtTensorLike }>();
  private residentBytes = 0;
  /** Resident tensors replaced by newer feeds, freed inside the next serialized run (after every earlier one). */
  private retired: OrtTensorLike[] = [];

  private async residentFeed(io: IOInfo, value: Feed): Promise<OrtTensorLike | undefined> {
    if (!this.gpu || !RESIDENT_INPUTS.has(io.name) || "ints" in value || (io.type !== "float32" && io.type !== "float16") || !this.ort.Tensor.fromGpuBuffer) return undefined;
    const dims = value.dims.join("x");
    const prev = this.resident.get(io.name);
    if (!prev || prev.src !== value.data || prev.dims !== dims) {
      // A run queued before this call may still use the old buffer: it is freed once those have run.
      if (prev?.tensor) this.retired.push(prev.tensor);
      this.resident.set(io.name, { src: value.data, dims, seen: 1 });
      return undefined;
    }
    if (prev.tensor) return prev.tensor;
    const device = (await this.ort.env?.webgpu?.device) as GpuDeviceLike | undefined;
    const usage = (globalThis as { GPUBufferUsage?: { STORAGE: number; COPY_SRC: number; COPY_DST: number } }).GPUBufferUsage;
    if (!device || !usage) return undefined;
    const bytes = io.type === "float16" ? f32ToF16(value.data) : value.data;
    const size = Math.ceil(bytes.byteLength / 16) * 16;
    const buffer = device.createBuffer({ size, usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.residentBytes += size;
    prev.tensor = this.ort.Tensor.fromGpuBuffer(buffer, { dataType: io.type, dims: value.dims, dispose: () => buffer.destroy() });
    return prev.tensor;
  }

  /** Counters of the WebGPU residency: feeds kept on the GPU and the bytes uploaded for them. */
  get residency(): { readonly residentFeeds: number; readonly uploadedBytes: number } {
    return { residentFeeds: [...this.resident.values()].filter((r) => r.tensor).length, uploadedBytes: this.residentBytes };
  }

  private async runOnce(feeds: Record<string, Feed>, outputNames?: readonly string[]): Promise<Record<string, Tensor>> {
    const ortFeeds: Record<string, OrtTensorLike> = {};
    for (const [name, value] of Object.entries(feeds)) {
      const io = this.input(name);
      ortFeeds[name] = (await this.residentFeed(io, value)) ?? this.toOrt(io, value);
    }
    const wanted = outputNames ?? this.outputs.map((o) => o.name);
    const free = this.retired.splice(0);
    let out: Record<string, Tensor>;
    try {
      out = await this.serialize(async () => {
        // WebGPU runs are serialized in order, so every run that could read these has finished.
        for (const t of free) t.dispose?.();
        const result = await this.session.run(ortFeeds);
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
      const shapes = Object.entries(ortFeeds).map(([k, v]) => `${k}: ${v.type}[${v.dims.join(",")}]`).join("; ");
      throw new ModelFileError(this.file, `inference failed with inputs ${shapes}: ${(err as Error).message}`, { cause: err });
    }
    return out;
  }

  private toOrt(io: IOInfo, value: Feed): OrtTensorLike {
    const dims = value.dims;
    if (io.shape.length !== dims.length) {
      throw new ModelFileError(this.file, `input "${io.name}" has rank ${io.shape.length} [${io.shape.join(",")}] but got [${dims.join(",")}]`);
    }
    const src: ArrayLike<number> = "ints" in value ? value.ints : value.data;
    switch (io.type) {
      case "float32":
        return new this.ort.Tensor("float32", src instanceof Float32Array ? src : Float32Array.from(src), dims);
      case "float16": {
        const bits = f32ToF16(src);
        const t = new this.ort.Tensor("float16", bits, dims);
        // onnxruntime-common wraps Uint16Array data in a Float16Array where the runtime has one (Bun);
        // onnxruntime-node's N-API binding cannot read a Float16Array under Bun and sees 0 bytes.
        // Hand the native binding the raw bits it wants.
        if (this.backend === "onnxruntime-node") (t as unknown as { cpuData: Uint16Array }).cpuData = bits;
        return t;
      }
      case "float64":
        return new this.ort.Tensor("float64", Float64Array.from(src), dims);
      case "int64": {
        const data = new BigInt64Array(src.length);
        for (let i = 0; i < src.length; i++) data[i] = BigInt(Math.round(src[i]!));
        return new this.ort.Tensor("int64", data, dims);
      }
      case "int32":
        return new this.ort.Tensor("int32", Int32Array.from(src, (v) => Math.round(v)), dims);
      default:
        throw new ModelFileError(this.file, `input "${io.name}" has dtype ${io.type}, which diffgraph does not feed`);
    }
  }

  async release(): Promise<void> {
    for (const r of this.resident.values()) r.tensor?.dispose?.();
    for (const t of this.retired.splice(0)) t.dispose?.();
    this.resident.clear();
    await this.session.release();
  }
}

/** Rows [start, end) of a feed. */
function sliceFeed(f: Feed, start: number, end: number): Feed {
  const per = f.dims.slice(1).reduce((a, b) => a * b, 1);
  const dims = [end - start, ...f.dims.slice(1)];
  if ("ints" in f) return { dims, ints: Array.prototype.slice.call(f.ints, start * per, end * per) as number[] };
  return { dims, data: f.data.subarray(start * per, end * per) };
}

/**
 * The external data files an ONNX model refers to (`TensorProto.external_data` entries whose key is
 * "location"), found by their protobuf encoding: field 1 "location", then field 2 with the file name.
 * Models above 2 GB must keep their weights this way (protobuf's limit), e.g. `model.onnx_data`.
 */
export function externalDataFiles(bytes: Uint8Array): string[] {
  const key = [0x0a, 0x08, 0x6c, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x12]; // tag, len 8, "location", tag of value
  const found = new Set<string>();
  const dec = new TextDecoder();
  outer: for (let i = bytes.indexOf(0x0a); i >= 0 && i + key.length < bytes.length; i = bytes.indexOf(0x0a, i + 1)) {
    for (let k = 1; k < key.length; k++) if (bytes[i + k] !== key[k]) continue outer;
    let len = 0;
    let shift = 0;
    let at = i + key.length;
    for (; at < bytes.length; at++) {
      len |= (bytes[at]! & 0x7f) << shift;
      shift += 7;
      if (!(bytes[at]! & 0x80)) break;
    }
    at++;
    if (len > 0 && len < 4096 && at + len <= bytes.length) found.add(dec.decode(bytes.subarray(at, at + len)));
  }
  return [...found];
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
}

export interface OnnxRuntimeOptions {
  readonly backends: OnnxBackends;
  readonly executionProvider?: ExecutionProvider;
  readonly log?: (message: string) => void;
  /** Intra-op threads for the native CPU provider (default: ORT's choice). */
  readonly threads?: number;
  /** onnxruntime-web WebGPU: keep repeated inputs and unread outputs on the GPU (default true). */
  readonly gpuResidency?: boolean;
}

/**
 * Loads ONNX models through the chosen backend and caches one session per (file, provider).
 * Provider "auto" tries the table above in order and logs why each skipped entry was skipped.
 */
export class OnnxRuntime {
  readonly executionProvider: ExecutionProvider;
  private readonly sessions = new Map<string, Promise<OnnxModel>>();
  private readonly unavailable = new Map<string, string>();
  private readonly announced = new Set<string>();
  /** Backend/provider pairs that have created a session in this runtime. */
  private readonly working = new Set<string>();
  private readonly log: (message: string) => void;

  constructor(private readonly options: OnnxRuntimeOptions) {
    this.executionProvider = options.executionProvider ?? "auto";
    if (!EXECUTION_PROVIDERS.includes(this.executionProvider)) {
      throw new RangeError(`executionProvider must be one of ${EXECUTION_PROVIDERS.join(", ")}, got "${this.executionProvider}"`);
    }
    this.log = options.log ?? (() => {});
  }

  get host(): string {
    return this.options.backends.host;
  }

  /** The backend/provider pairs sessions were created on so far ("onnxruntime-web/webgpu"): what `auto` chose. */
  get providersInUse(): readonly string[] {
    return [...this.working];
  }

  /** Load (or reuse) the session for `path` inside `source`. */
  load(source: ModelSource, path: string, options: LoadOptions = {}): Promise<OnnxModel> {
    const file = `${source.root}/${path}`;
    const fixed = options.freeDimensions && Object.keys(options.freeDimensions).length ? options.freeDimensions : undefined;
    for (const [name, size] of Object.entries(fixed ?? {})) {
      if (!Number.isInteger(size) || size < 1) return Promise.reject(new RangeError(`freeDimensions.${name}: must be a positive whole number, got ${size}`));
    }
    const key = `${file}|${this.executionProvider}${fixed ? `|${JSON.stringify(Object.entries(fixed).sort())}` : ""}`;
    let p = this.sessions.get(key);
    if (!p) {
      p = this.create(source, path, file, fixed);
      this.sessions.set(key, p);
      p.catch(() => this.sessions.delete(key)); // a failed load can be retried after the file is fixed
    }
    return p;
  }

  private async create(source: ModelSource, path: string, file: string, fixed?: Readonly<Record<string, number>>): Promise<OnnxModel> {
    let bytes: Uint8Array;
    try {
      bytes = await source.read(path);
    } catch (err) {
      if (err instanceof ModelFileError) throw err;
      throw new ModelFileError(file, `cannot be read (${(err as Error).message})`, { cause: err });
    }
    if (bytes.length < 16) throw new ModelFileError(file, `is ${bytes.length} bytes: too short to be an ONNX model (truncated?)`);
    // An ONNX file is a protobuf ModelProto; its first field is ir_version (tag 0x08).
    if (bytes[0] !== 0x08) throw new ModelFileError(file, "is not an ONNX model (does not start with a ModelProto ir_version field)");
    // Weights stored beside the graph (`model.onnx_data`, required above 2 GB): onnxruntime-node opens
    // them itself from a server's disk (the model is then created from its path); otherwise they are
    // read through the same source (fetched in a browser) and handed over as `externalData`.
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
    const locations = externalDataFiles(bytes);
    for (const location of locations) {
      if (location.includes("..") || location.startsWith("/")) throw new ModelFileError(file, `refers to external data "${location}" outside its folder`);
      if (!(await source.exists(dir + location))) throw new ModelFileError(`${source.root}/${dir}${location}`, `file not found (${file} keeps its weights there as external data)`);
    }
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
      let session: OrtSessionLike;
      const serialize = this.serializerFor(backend, provider);
      try {
        const options = this.sessionOptions(backend, provider);
        if (fixed) options.freeDimensionOverrides = { ...fixed };
        let model: Uint8Array | string = bytes;
        if (locations.length && backend === "onnxruntime-node" && source.localPath) model = source.localPath(path);
        else if (locations.length) options.externalData = await readExternal();
        session = await serialize(() => ort.InferenceSession.create(model, options));
      } catch (err) {
        const msg = (err as Error).message ?? String(err);
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
      if (this.executionProvider === "auto" && errors.length > 0 && !this.announced.has(`${backend}/${provider}`)) {
        this.announced.add(`${backend}/${provider}`);
        this.log(`onnx: executionProvider "auto" falls back to ${backend}/${provider} (${errors.join("; ")})`);
      }
      const meta = (list: readonly OrtValueMetadata[] | undefined, names: readonly string[]): IOInfo[] =>
        names.map((name) => {
          const m = list?.find((x) => x.name === name);
          // An axis fixed by freeDimensions is reported at its size, so plugins treat it as static.
          return { name, type: normalizeType(m?.type), shape: m?.shape ? m.shape.map((d) => (typeof d === "string" && fixed?.[d] !== undefined ? fixed[d]! : d)) : [] };
        });
      const hasMeta = !!session.inputMetadata?.length && session.inputMetadata.every((m) => !m.isTensor || m.shape !== undefined);
      return new OnnxModel(file, backend, provider, meta(session.inputMetadata, session.inputNames), meta(session.outputMetadata, session.outputNames), ort, session, serialize, hasMeta, this.residency(backend, provider));
    }
    throw new Error(`no ONNX backend could load ${file} with executionProvider "${this.executionProvider}" on ${this.host}: ${errors.join("; ")}`);
  }

  private readonly chains = new Map<string, Promise<unknown>>();

  /**
   * onnxruntime-web's WebGPU provider refuses a second session creation or run while one is in
   * flight ("another WebGPU EP inference session is being created"); queue its calls one at a time.
   * Native sessions run concurrently.
   */
  private serializerFor(backend: BackendName, provider: string): <T>(work: () => Promise<T>) => Promise<T> {
    if (backend !== "onnxruntime-web" || provider !== "webgpu") return (work) => work();
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

  private residency(backend: BackendName, provider: string): boolean {
    return backend === "onnxruntime-web" && provider === "webgpu" && this.options.gpuResidency !== false;
  }

  private sessionOptions(backend: BackendName, provider: string): Record<string, unknown> {
    const opts: Record<string, unknown> = { executionProviders: [provider], graphOptimizationLevel: "all" };
    if (this.residency(backend, provider)) opts.preferredOutputLocation = "gpu-buffer";
    if (backend === "onnxruntime-node" && provider === "cpu" && this.options.threads) opts.intraOpNumThreads = this.options.threads;
    return opts;
  }

  async dispose(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (p) => (await p.catch(() => null))?.release()));
  }
}

/** ORT errors carry a source path and a lambda signature before the reason; keep the reason. */
function shortReason(msg: string): string {
  const m = /(Failed to [^.]*|No [a-z ]*adapter[^.]*|not (?:available|supported)[^.]*)/i.exec(msg);
  return (m ? m[1]! : firstLine(msg)).trim().slice(0, 160);
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.slice(0, 300);
}
