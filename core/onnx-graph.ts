/**
 * What an ONNX file declares, read from its bytes without onnxruntime: the graph's inputs and outputs
 * (name, dtype, shape), its opsets and the external data files it names. Sessions are created on a
 * node's first run (`core/onnx.ts`), but a model in the wrong slot or a truncated file must fail when
 * the pipeline loads; this reader gives the plugins the same metadata a session reports, and walks
 * every length-delimited field of the model and its graph, so a file cut anywhere is refused here.
 *
 * The protobuf wire format: each field is a varint key (field number << 3 | wire type) followed by a
 * varint (type 0), 8 bytes (1), a varint length and that many bytes (2) or 4 bytes (5).
 * ModelProto, GraphProto, ValueInfoProto, TypeProto and TensorShapeProto field numbers are onnx.proto3's.
 */

import { concatBytes } from "./bytes.ts";

export interface GraphIO {
  readonly name: string;
  /** onnxruntime-JS dtype name ("float32", "int64"); "tensor" fields only: a sequence or map is "non-tensor". */
  readonly type: string;
  readonly isTensor: boolean;
  /** A number, the symbolic name (dim_param), or "" for an axis with neither. */
  readonly shape: readonly (number | string)[];
}

export interface OnnxGraphInfo {
  readonly irVersion: number;
  readonly opsets: readonly { readonly domain: string; readonly version: number }[];
  /** Graph inputs that are not initializers (what a session asks to be fed), in file order. */
  readonly inputs: readonly GraphIO[];
  readonly outputs: readonly GraphIO[];
  /** Nodes of the main graph. */
  readonly nodeCount: number;
  /** Whether a node of the main graph or of a model-local function holds a graph of its own (If, Loop, Scan: an attribute of type GRAPH or GRAPHS). */
  readonly subgraphs: boolean;
}

/** The file is not a well-formed ONNX ModelProto; the message says where. */
export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
}

/** TensorProto.DataType → onnxruntime-JS names. */
const DTYPES: Readonly<Record<number, string>> = {
  1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
  9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
  16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
  21: "uint4", 22: "int4",
};

interface Field {
  /** Where the field's key starts: the field's bytes are [at, end) (wire 0: `end` is set too). */
  readonly at: number;
  readonly no: number;
  readonly wire: number;
  /** Varint value (wire 0), as a number (exact to 2^53). */
  readonly value: number;
  /** Bytes of a length-delimited field (wire 2). */
  readonly start: number;
  readonly end: number;
}

class Reader {
  constructor(
    private readonly bytes: Uint8Array,
    private at: number,
    private readonly end: number,
    private readonly what: string,
  ) {}

  private varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw new OnnxFormatError(`${this.what}: a varint runs past the end at byte ${this.at}`);
      const b = this.bytes[this.at++]!;
      result += (b & 0x7f) * scale;
      if (!(b & 0x80)) return result;
      scale *= 128;
    }
    throw new OnnxFormatError(`${this.what}: a varint longer than 10 bytes at byte ${this.at}`);
  }

  *fields(): Generator<Field> {
    while (this.at < this.end) {
      const keyAt = this.at;
      const key = this.varint();
      const no = Math.floor(key / 8);
      const wire = key % 8;
      if (no === 0) throw new OnnxFormatError(`${this.what}: field number 0 at byte ${keyAt}`);
      switch (wire) {
        case 0: {
          const value = this.varint();
          yield { at: keyAt, no, wire, value, start: 0, end: this.at };
          break;
        }
        case 1:
        case 5: {
          const n = wire === 1 ? 8 : 4;
          if (this.at + n > this.end) throw new OnnxFormatError(`${this.what}: field ${no} runs past the end at byte ${keyAt}`);
          this.at += n;
          yield { at: keyAt, no, wire, value: 0, start: this.at - n, end: this.at };
          break;
        }
        case 2: {
          const len = this.varint();
          if (this.at + len > this.end) {
            throw new OnnxFormatError(`${this.what}: field ${no} at byte ${keyAt} declares ${len} bytes, ${this.end - this.at} are left (truncated)`);
          }
          const start = this.at;
          this.at += len;
          yield { at: keyAt, no, wire, value: len, start, end: this.at };
          break;
        }
        default:
          throw new OnnxFormatError(`${this.what}: field ${no} at byte ${keyAt} has wire type ${wire}, which ONNX does not use`);
      }
    }
  }
}

const text = new TextDecoder("utf-8", { fatal: false });

function sub(bytes: Uint8Array, f: Field, what: string): Reader {
  if (f.wire !== 2) throw new OnnxFormatError(`${what}: expected a length-delimited field, got wire type ${f.wire}`);
  return new Reader(bytes, f.start, f.end, what);
}

function str(bytes: Uint8Array, f: Field): string {
  return f.wire === 2 ? text.decode(bytes.subarray(f.start, f.end)) : "";
}

function shapeOf(bytes: Uint8Array, f: Field, what: string): (number | string)[] {
  const dims: (number | string)[] = [];
  for (const d of sub(bytes, f, what).fields()) {
    if (d.no !== 1) continue;
    let dim: number | string = "";
    for (const x of sub(bytes, d, `${what} dim`).fields()) {
      if (x.no === 1 && x.wire === 0) dim = x.value;
      else if (x.no === 2) dim = str(bytes, x);
    }
    dims.push(dim);
  }
  return dims;
}

function valueInfo(bytes: Uint8Array, f: Field, what: string): GraphIO {
  let name = "";
  let type = "";
  let isTensor = false;
  let shape: (number | string)[] = [];
  for (const x of sub(bytes, f, what).fields()) {
    if (x.no === 1) name = str(bytes, x);
    else if (x.no === 2) {
      for (const t of sub(bytes, x, `${what} type`).fields()) {
        if (t.no !== 1) continue; // tensor_type; sequence (4), map (5), optional (9) are not tensors
        isTensor = true;
        for (const tt of sub(bytes, t, `${what} tensor type`).fields()) {
          if (tt.no === 1 && tt.wire === 0) type = DTYPES[tt.value] ?? `dtype ${tt.value}`;
          else if (tt.no === 2) shape = shapeOf(bytes, tt, `${what} shape`);
        }
      }
    }
  }
  return { name, type: isTensor ? type : "non-tensor", isTensor, shape };
}

/** Parse the ModelProto in `bytes`; throws `OnnxFormatError` for a file that is not one, or is cut short. */
export function readOnnxGraph(bytes: Uint8Array): OnnxGraphInfo {
  let irVersion = 0;
  const opsets: { domain: string; version: number }[] = [];
  let graph: Field | undefined;
  let subgraphs = false;
  /** NodeProto field 5 is an AttributeProto, whose fields 6 (g) and 11 (graphs) hold subgraphs. */
  const holdsGraph = (node: Field, what: string) => {
    let found = false; // every field is walked: a cut anywhere in the node must not pass
    for (const a of sub(bytes, node, what).fields()) {
      if (a.no !== 5 || a.wire !== 2) continue;
      for (const x of sub(bytes, a, `${what} attribute`).fields()) if ((x.no === 6 || x.no === 11) && x.wire === 2) found = true;
    }
    return found;
  };
  for (const f of new Reader(bytes, 0, bytes.length, "model").fields()) {
    if (f.no === 1 && f.wire === 0) irVersion = f.value;
    else if (f.no === 7) graph = f;
    else if (f.no === 25 && f.wire === 2 && !subgraphs) {
      // A model-local function (FunctionProto; its nodes are field 7) may hold an If or a Loop too.
      for (const n of sub(bytes, f, "function").fields()) if (n.no === 7 && n.wire === 2 && holdsGraph(n, "function node")) subgraphs = true;
    }
    else if (f.no === 8) {
      let domain = "";
      let version = 0;
      for (const x of sub(bytes, f, "opset_import").fields()) {
        if (x.no === 1) domain = str(bytes, x);
        else if (x.no === 2 && x.wire === 0) version = x.value;
      }
      opsets.push({ domain, version });
    }
  }
  if (irVersion < 1) throw new OnnxFormatError("model: no ir_version");
  if (!graph) throw new OnnxFormatError("model: no graph");
  if (!opsets.length && irVersion >= 3) throw new OnnxFormatError("model: no opset_import (truncated after the graph?)");
  const inputs: GraphIO[] = [];
  const outputs: GraphIO[] = [];
  const initializers = new Set<string>();
  let nodeCount = 0;
  for (const f of sub(bytes, graph, "graph").fields()) {
    if (f.no === 1) {
      nodeCount++;
      // Walk the node too: a cut inside it must not pass for a shorter graph.
      if (holdsGraph(f, `graph node ${nodeCount}`)) subgraphs = true;
    } else if (f.no === 5) {
      for (const x of sub(bytes, f, "graph initializer").fields()) if (x.no === 8) initializers.add(str(bytes, x));
    } else if (f.no === 11) inputs.push(valueInfo(bytes, f, "graph input"));
    else if (f.no === 12) outputs.push(valueInfo(bytes, f, "graph output"));
  }
  if (!outputs.length) throw new OnnxFormatError("graph: no outputs");
  return { irVersion, opsets, inputs: inputs.filter((i) => !initializers.has(i.name)), outputs, nodeCount, subgraphs };
}

/**
 * `bytes` with the graph's symbolic axes named in `sizes` made static: every dimension of the graph's
 * inputs, outputs and `value_info` whose `dim_param` is a key of `sizes` gets that size as its
 * `dim_value` instead (its denotation kept); every other byte is copied as it is. onnxruntime then
 * knows those shapes at creation, as for a model exported with them: its constant folding removes the
 * shape arithmetic the export computes at run time (`Shape`, `Gather`, `Concat` … feeding `Reshape`)
 * and its planner sizes buffers ahead. onnxruntime's `freeDimensionOverrides` (where it is
 * implemented: onnxruntime-web; onnxruntime-node 1.30's binding has no such option and ignores it)
 * fixes the graph inputs' axes the same way; the outputs and `value_info` are edited too, so nothing
 * in the file contradicts them. Tensor types only (sequence, optional and sparse types are copied as
 * they are). Written here because no npm protobuf library edits a message in place without decoding
 * the whole model (its weights included) into objects first. Returns `bytes` itself when nothing is
 * named. Throws `OnnxFormatError` where what it walks (the model's fields, its graph's, the value
 * infos') is not well-formed, or a size is not a positive integer; `readOnnxGraph` checks the rest.
 */
export function pinSymbolicDims(bytes: Uint8Array, sizes: Readonly<Record<string, number>>): Uint8Array {
  for (const [name, size] of Object.entries(sizes)) {
    if (!Number.isSafeInteger(size) || size < 1) throw new OnnxFormatError(`pinSymbolicDims: the size of "${name}" must be a positive integer, got ${size}`);
  }
  const names = new Map(Object.entries(sizes).map(([k, v]) => [new TextEncoder().encode(k), v] as const));
  const pinned = (f: Field): number | undefined => {
    if (f.wire !== 2) return undefined;
    const len = f.end - f.start;
    for (const [name, size] of names) {
      if (name.length !== len) continue;
      let same = true;
      for (let i = 0; i < len && same; i++) same = bytes[f.start + i] === name[i];
      if (same) return size;
    }
    return undefined;
  };
  const nest = (no: number, what: string, inner: Edit) => nested(bytes, no, what, inner);
  // Dimension.dim_param (2) named in `sizes` → Dimension.dim_value (1).
  const dimParam: Edit = (x) => {
    const size = x.no === 2 ? pinned(x) : undefined;
    return size === undefined ? undefined : [varint(1 * 8 + 0), varint(size)];
  };
  // ValueInfoProto.type (2) → TypeProto.tensor_type (1) → Tensor.shape (2) → TensorShapeProto.dim (1)
  const valueInfo = nest(2, "value_info type", nest(1, "tensor type", nest(2, "shape", nest(1, "shape dim", dimParam))));
  // GraphProto.input (11), output (12), value_info (13): each a ValueInfoProto.
  const graphEdit: Edit = (x) => (x.no === 11 || x.no === 12 || x.no === 13 ? nest(x.no, "graph value_info", valueInfo)(x) : undefined);
  return editModel(bytes, nest(7, "graph", graphEdit));
}

/**
 * The byte alignment onnxruntime's CPU kernels read a prepacked weight with (MLAS's packed GEMM
 * operands, 64 bytes: AVX-512 aligned loads).
 */
export const PREPACKED_ALIGNMENT = 64;

/**
 * Removes, from an optimized graph onnxruntime wrote with `session.save_external_prepacked_constant_initializers`,
 * every prepacked copy of a weight that lies in the weights file at an offset that is not a multiple
 * of `alignment`; the weight itself stays, and its kernel packs it again when a session is made.
 * onnxruntime 1.30 writes these copies one after another with no padding, so a weight whose size is
 * not a multiple of 64 bytes before them (tiny-sdxl's second text encoder: a 623×24 embedding)
 * leaves the next ones misaligned, and a session loaded from that graph crashes the process in its
 * first run (SIGSEGV: an aligned load). Returns the bytes (`bytes` itself when nothing is removed)
 * and the removed entries' values (`kernel|offset;length;…`). Entries whose offsets do not parse are
 * removed too. Throws `OnnxFormatError` where the fields it walks are not well-formed.
 */
export function dropUnalignedPrepacked(bytes: Uint8Array, alignment = PREPACKED_ALIGNMENT): { bytes: Uint8Array; dropped: string[] } {
  const dropped: string[] = [];
  // TensorProto.external_data (13): StringStringEntryProto { key (1), value (2) }.
  const entry: Edit = (x) => {
    if (x.no !== 13 || x.wire !== 2) return undefined;
    let key = "";
    let value = "";
    for (const y of sub(bytes, x, "external_data entry").fields()) {
      if (y.no === 1) key = str(bytes, y);
      else if (y.no === 2) value = str(bytes, y);
    }
    if (!key.startsWith("prepacked")) return undefined;
    // "<kernel>|<offset>;<length>;<…>", one "|offset;length;…" per packed buffer.
    const buffers = value.split("|").slice(1);
    const aligned = buffers.length > 0 && buffers.every((b) => {
      const offset = Number(b.split(";")[0]);
      return Number.isSafeInteger(offset) && offset >= 0 && offset % alignment === 0;
    });
    if (aligned) return undefined;
    dropped.push(value);
    return [];
  };
  // ModelProto.graph (7) → GraphProto.initializer (5) → TensorProto
  const out = editModel(bytes, nested(bytes, 7, "graph", nested(bytes, 5, "initializer", entry)));
  return { bytes: out, dropped };
}

/** How deep graphs may nest inside node attributes before a model is refused (protobuf's own default limit). */
export const MAX_GRAPH_DEPTH = 100;

/**
 * The external data files a model names: the "location" of each tensor whose data lies in another file
 * (TensorProto.data_location EXTERNAL with its external_data entries), wherever an inference graph can
 * hold a tensor: the graph's initializers and sparse initializers, node attributes (a Constant's value),
 * the graphs of If, Loop and Scan, and model-local functions (training_info is not read: inference
 * ignores it). Models above 2 GB must keep their weights this way (protobuf's limit), e.g. `model.onnx_data`.
 * Throws `OnnxFormatError` where one of those messages is malformed or graphs nest deeper than
 * `MAX_GRAPH_DEPTH`.
 */
export function externalDataFiles(bytes: Uint8Array): string[] {
  const found = new Set<string>();
  // TensorProto: external_data (13), StringStringEntryProto { key (1), value (2) }, read only when
  // data_location (14) is EXTERNAL (1), as onnxruntime does: a leftover entry on inline data names no file.
  const tensor = (f: Field) => {
    let external = false;
    const locations: string[] = [];
    for (const x of sub(bytes, f, "tensor").fields()) {
      if (x.no === 14 && x.wire === 0) external = x.value === 1;
      if (x.no !== 13) continue;
      let key = "";
      let value = "";
      for (const y of sub(bytes, x, "external_data entry").fields()) {
        if (y.no === 1) key = str(bytes, y);
        else if (y.no === 2) value = str(bytes, y);
      }
      if (key === "location" && value) locations.push(value);
    }
    if (external) for (const l of locations) found.add(l);
  };
  // SparseTensorProto: values (1), indices (2).
  const sparse = (f: Field) => {
    for (const x of sub(bytes, f, "sparse tensor").fields()) if (x.no === 1 || x.no === 2) tensor(x);
  };
  // AttributeProto: t (5), g (6), tensors (10), graphs (11), sparse_tensor (22), sparse_tensors (23).
  const attribute = (f: Field, depth: number) => {
    for (const x of sub(bytes, f, "attribute").fields()) {
      if (x.no === 5 || x.no === 10) tensor(x);
      else if (x.no === 6 || x.no === 11) graph(x, depth + 1);
      else if (x.no === 22 || x.no === 23) sparse(x);
    }
  };
  // NodeProto.attribute (5).
  const node = (f: Field, depth: number) => {
    for (const x of sub(bytes, f, "node").fields()) if (x.no === 5) attribute(x, depth);
  };
  // GraphProto: node (1), initializer (5), sparse_initializer (15).
  const graph = (f: Field, depth: number): void => {
    if (depth > MAX_GRAPH_DEPTH) throw new OnnxFormatError(`graph: subgraphs nested deeper than ${MAX_GRAPH_DEPTH} levels`);
    for (const x of sub(bytes, f, "graph").fields()) {
      if (x.no === 1) node(x, depth);
      else if (x.no === 5) tensor(x);
      else if (x.no === 15) sparse(x);
    }
  };
  // ModelProto: graph (7), functions (25) → FunctionProto.node (7).
  for (const x of new Reader(bytes, 0, bytes.length, "model").fields()) {
    if (x.no === 7) graph(x, 0);
    else if (x.no === 25) for (const y of sub(bytes, x, "function").fields()) if (y.no === 7) node(y, 0);
  }
  return [...found];
}

/** A rewrite of one field: its new bytes as pieces (none: the field is removed), or undefined to keep it as it is. */
type Edit = (f: Field) => Uint8Array[] | undefined;

/** A message's fields with `edit` applied, as pieces; undefined when no field changed. */
function editFields(bytes: Uint8Array, f: Field, what: string, edit: Edit): Uint8Array[] | undefined {
  const pieces: Uint8Array[] = [];
  let changed = false;
  for (const x of sub(bytes, f, what).fields()) {
    const e = edit(x);
    if (e) {
      changed = true;
      pieces.push(...e);
    } else pieces.push(bytes.subarray(x.at, x.end));
  }
  return changed ? pieces : undefined;
}

/** Field `no`, a message, with `inner` applied to its fields (and its length written anew); other fields kept. */
function nested(bytes: Uint8Array, no: number, what: string, inner: Edit): Edit {
  return (x) => {
    if (x.no !== no) return undefined;
    const out = editFields(bytes, x, what, inner);
    return out && [varint(no * 8 + 2), varint(out.reduce((n, p) => n + p.length, 0)), ...out];
  };
}

/** The ModelProto `bytes` with `edit` applied to its fields: `bytes` itself when nothing changed. */
function editModel(bytes: Uint8Array, edit: Edit): Uint8Array {
  const pieces = editFields(bytes, { at: 0, no: 0, wire: 2, value: bytes.length, start: 0, end: bytes.length }, "model", edit);
  return pieces ? concatBytes(pieces) : bytes;
}

/** A non-negative integer as a protobuf varint. */
export function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Uint8Array.from(out);
}

/**
 * A complete one-node model (`y = Identity(x)`, float [1], opset 14): what an execution provider is
 * tried with before it is handed a real model (`OnnxRuntime`: onnxruntime-node's WebGPU provider finds
 * no adapter on many machines, and learning that from a text encoder would first read and prepare it),
 * and the session the prewarm worker makes onnxruntime's environment with (`adapters/ort-prewarm-node.ts`).
 */
export function probeModelBytes(): Uint8Array {
  const enc = new TextEncoder();
  const cat = (...parts: Uint8Array[]) => concatBytes(parts);
  const field = (no: number, body: Uint8Array) => cat(varint(no * 8 + 2), varint(body.length), body);
  const text = (no: number, s: string) => field(no, enc.encode(s));
  const int = (no: number, v: number) => cat(varint(no * 8), varint(v));
  // ValueInfoProto { name, type { tensor_type { elem_type float, shape { dim { dim_value 1 } } } } }
  const io = (name: string) => cat(text(1, name), field(2, field(1, cat(int(1, 1), field(2, field(1, int(1, 1)))))));
  const node = cat(text(1, "x"), text(2, "y"), text(4, "Identity"));
  const graph = cat(field(1, node), text(2, "probe"), field(11, io("x")), field(12, io("y")));
  return cat(int(1, 8), field(7, graph), field(8, cat(text(1, ""), int(2, 14))));
}
