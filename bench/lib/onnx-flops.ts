/**
 * Counting a model's FLOPs from its ONNX graph, and a MatMul model to measure the roofline with.
 *
 * FLOPs = 2 × the multiply-accumulates of the Conv, ConvTranspose, MatMul and Gemm nodes (the
 * element-wise rest — norms, activations, adds — is not counted: it is a few % of the arithmetic
 * and bound by memory, not by the FMA units the roofline measures). A MAC count needs each node's
 * shapes, and an exported UNet computes many of them at run time (Shape → Gather → Reshape), which
 * ONNX's static shape inference does not follow; so the shapes are read from a real run:
 * every tensor the counted nodes read or write is added as a graph output and the model is run once
 * on the benchmark's inputs. The graph is read with protobufjs and an excerpt of onnx.proto (the
 * field numbers below are ONNX's; fields not listed — the weights' bytes among them — are skipped).
 */
import protobuf from "protobufjs";

const ONNX_PROTO = `
syntax = "proto2";
package onnx;
message ModelProto { optional int64 ir_version = 1; optional string producer_name = 2; optional GraphProto graph = 7; repeated OperatorSetIdProto opset_import = 8; }
message OperatorSetIdProto { optional string domain = 1; optional int64 version = 2; }
message GraphProto { repeated NodeProto node = 1; optional string name = 2; repeated TensorProto initializer = 5; repeated ValueInfoProto input = 11; repeated ValueInfoProto output = 12; }
message NodeProto { repeated string input = 1; repeated string output = 2; optional string name = 3; optional string op_type = 4; optional string domain = 7; }
message TensorProto { repeated int64 dims = 1; optional int32 data_type = 2; optional string name = 8; optional bytes raw_data = 9; }
message ValueInfoProto { optional string name = 1; optional TypeProto type = 2; }
message TypeProto { message Tensor { optional int32 elem_type = 1; optional TensorShapeProto shape = 2; } optional Tensor tensor_type = 1; }
message TensorShapeProto { message Dimension { optional int64 dim_value = 1; optional string dim_param = 2; } repeated Dimension dim = 1; }
`;

const root = protobuf.parse(ONNX_PROTO, { keepCase: true }).root;
const Model = root.lookupType("onnx.ModelProto");

interface NodeMsg { input: string[]; output: string[]; op_type: string }
interface TensorMsg { name: string; dims: (number | { toNumber(): number })[] }
interface GraphMsg { node: NodeMsg[]; initializer: TensorMsg[]; input: { name: string }[]; output: { name: string }[] }

const COUNTED = new Set(["Conv", "ConvTranspose", "MatMul", "Gemm"]);
const num = (d: number | { toNumber(): number }) => (typeof d === "number" ? d : d.toNumber());
const numel = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);

export interface FlopPlan {
  /** The model with the counted nodes' tensors added as outputs. */
  readonly probe: Uint8Array;
  /** Names of those outputs (run the probe and ask for them). */
  readonly outputs: readonly string[];
  readonly nodes: number;
  readonly counted: Readonly<Record<string, number>>;
  /** MACs of the counted nodes, given each probed tensor's dims. */
  flops(dimsOf: (name: string) => readonly number[]): number;
}

/** Read the graph and build the probe model (see the header). */
export function planFlops(bytes: Uint8Array): FlopPlan {
  const model = Model.toObject(Model.decode(bytes), { defaults: true }) as { graph: GraphMsg };
  const g = model.graph;
  const init = new Map(g.initializer.map((t) => [t.name, t.dims.map(num)]));
  const graphInputs = new Set(g.input.map((i) => i.name));
  const already = new Set(g.output.map((o) => o.name));
  const nodes = g.node.filter((n) => COUNTED.has(n.op_type));
  const wanted = new Set<string>();
  for (const n of nodes) for (const name of [n.input[0]!, n.input[1]!, n.output[0]!]) if (name && !init.has(name)) wanted.add(name);
  const outputs = [...wanted].filter((n) => !graphInputs.has(n));
  // Appending a second `graph` field merges it into the first: protobuf parsers concatenate repeated
  // fields of a message field that occurs twice (Protocol Buffers encoding guide, "Last One Wins"),
  // so these outputs are added without re-encoding the fields this excerpt does not know.
  const extra = Model.encode(Model.fromObject({ graph: { output: outputs.filter((o) => !already.has(o)).map((name) => ({ name, type: { tensor_type: { elem_type: 1 } } })) } })).finish();
  const probe = new Uint8Array(bytes.length + extra.length);
  probe.set(bytes, 0);
  probe.set(extra, bytes.length);
  const counted: Record<string, number> = {};
  for (const n of nodes) counted[n.op_type] = (counted[n.op_type] ?? 0) + 1;
  return {
    probe,
    outputs,
    nodes: g.node.length,
    counted,
    flops(dimsOf) {
      const shape = (name: string) => init.get(name) ?? dimsOf(name);
      let macs = 0;
      for (const n of nodes) {
        const a = shape(n.input[0]!);
        const w = shape(n.input[1]!);
        const y = shape(n.output[0]!);
        if (n.op_type === "Conv") macs += numel(y) * (numel(w) / w[0]!); // each output: Cin/g × kernel MACs
        else if (n.op_type === "ConvTranspose") macs += numel(a) * (numel(w) / w[0]!); // each input: Cout/g × kernel
        else if (n.op_type === "MatMul") macs += numel(y) * a[a.length - 1]!; // each output: K MACs
        else macs += numel(y) * (numel(a) / y[0]!); // Gemm: A is [M, K] or its transpose
      }
      return 2 * macs;
    },
  };
}

/**
 * A one-node model C = A·B (A [m, k] an input, B [k, n] a weight of seeded values): sgemm through
 * onnxruntime, for the roofline.
 */
export function matmulModel(m: number, k: number, n: number): Uint8Array {
  const weights = new Float32Array(k * n);
  let s = 12345;
  for (let i = 0; i < weights.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    weights[i] = (s / 2 ** 32 - 0.5) * 0.1;
  }
  const vi = (name: string, dims: number[]) => ({ name, type: { tensor_type: { elem_type: 1, shape: { dim: dims.map((d) => ({ dim_value: d })) } } } });
  return Model.encode(
    Model.fromObject({
      ir_version: 7,
      producer_name: "diffgraph-bench",
      opset_import: [{ domain: "", version: 13 }],
      graph: {
        name: "sgemm",
        node: [{ input: ["A", "B"], output: ["C"], name: "matmul", op_type: "MatMul", domain: "" }],
        initializer: [{ name: "B", dims: [k, n], data_type: 1, raw_data: new Uint8Array(weights.buffer) }],
        input: [vi("A", [m, k])],
        output: [vi("C", [m, n])],
      },
    }),
  ).finish();
}
