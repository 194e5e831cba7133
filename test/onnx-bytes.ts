/**
 * A minimal ONNX file for tests that fake onnxruntime: a ModelProto whose graph declares the given
 * inputs and outputs (and no nodes), so `readOnnxGraph` — what `OnnxRuntime.load` checks a file with —
 * reads exactly the metadata a test wants, and a fake `InferenceSession.create` can read it back.
 */
import { readOnnxGraph, varint as varintBytes, type OnnxGraphInfo } from "../core/onnx-graph.ts";
import type { OrtSessionLike, OrtValueMetadata } from "../core/onnx.ts";

/** An axis: a size, a symbolic name, or a name with a denotation (`{ param, denotation }`). */
export type Dim = number | string | { readonly param: string; readonly denotation: string };
export type IO = readonly [name: string, type: string, shape: readonly Dim[]];

const DTYPE: Record<string, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

const varint = (n: number): number[] => [...varintBytes(n)];

const enc = new TextEncoder();
/** Protobuf fields as byte arrays, for tests that build a message by hand: length-delimited, a string, a varint. */
export const len = (no: number, body: readonly number[]) => [...varint(no * 8 + 2), ...varint(body.length), ...body];
export const str = (no: number, s: string) => len(no, [...enc.encode(s)]);
export const int = (no: number, v: number) => [...varint(no * 8), ...varint(v)];

function valueInfo([name, type, shape]: IO): number[] {
  const dtype = DTYPE[type];
  if (dtype === undefined) throw new Error(`onnxModelBytes: no dtype code for "${type}"`);
  const dims = shape.flatMap((d) => len(1, typeof d === "number" ? int(1, d) : typeof d === "string" ? str(2, d) : [...str(2, d.param), ...str(3, d.denotation)]));
  return [...str(1, name), ...len(2, len(1, [...int(1, dtype), ...len(2, dims)]))];
}

/** The bytes of a model declaring `inputs` and `outputs` (and `valueInfo`); `producer` tells fakes apart. */
export function onnxModelBytes(inputs: readonly IO[], outputs: readonly IO[], producer = "diffgraph-test", valueInfos: readonly IO[] = []): Uint8Array {
  const graph = [...str(2, "g"), ...inputs.flatMap((io) => len(11, valueInfo(io))), ...outputs.flatMap((io) => len(12, valueInfo(io))), ...valueInfos.flatMap((io) => len(13, valueInfo(io)))];
  return Uint8Array.from([...int(1, 8), ...str(2, producer), ...len(7, graph), ...len(8, [...str(1, ""), ...int(2, 17)])]);
}

/** The session a fake `InferenceSession.create` returns for `bytes`: the names and metadata the file declares. */
export function fakeSessionFor(bytes: Uint8Array, run: OrtSessionLike["run"] = async () => ({})): OrtSessionLike & { readonly graph: OnnxGraphInfo } {
  const graph = readOnnxGraph(bytes);
  const meta = (l: OnnxGraphInfo["inputs"]): OrtValueMetadata[] => l.map((g) => ({ name: g.name, isTensor: g.isTensor, type: g.type, shape: g.shape }));
  return {
    graph,
    inputNames: graph.inputs.map((i) => i.name),
    outputNames: graph.outputs.map((o) => o.name),
    inputMetadata: meta(graph.inputs),
    outputMetadata: meta(graph.outputs),
    run,
    release: async () => {},
  };
}

/** The producer name a model was made with (what `onnxModelBytes` was given; under 128 bytes). */
export function producerOf(bytes: Uint8Array): string {
  // ir_version (0x08, 8), then producer_name: tag 0x12, one length byte, the name.
  return bytes[2] === 0x12 ? new TextDecoder().decode(bytes.subarray(4, 4 + bytes[3]!)) : "";
}
