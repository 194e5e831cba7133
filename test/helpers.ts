/** Shared test setup: one diffgraph (CPU provider) and the tiny-sd pipeline document. */
import { readFileSync } from "node:fs";
import { createDiffgraph, type Diffgraph } from "../core/diffgraph.ts";
import { OnnxRuntime, type ExecutionProvider } from "../core/onnx.ts";
import { NodeCache } from "../core/node-cache.ts";
import { Pipeline } from "../core/pipeline.ts";
import { fileSource, onnxBackends } from "../core/adapters/node.ts";
import { builtinRegistry } from "../plugins/index.ts";

export const TINY_DOC = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8")) as Record<string, any>;

export function tinyDoc(): Record<string, any> {
  return structuredClone(TINY_DOC);
}

export function testRuntime(executionProvider: ExecutionProvider = "cpu"): OnnxRuntime {
  return new OnnxRuntime({ backends: onnxBackends, executionProvider, threads: 1 });
}

export async function loadTiny(doc = tinyDoc(), onnx = testRuntime(), model = "models/tiny-sd", cache = new NodeCache()): Promise<Pipeline> {
  return Pipeline.load(doc, { registry: builtinRegistry(), onnx, models: fileSource(model), cache });
}

export async function diffgraph(): Promise<Diffgraph> {
  return createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {} });
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
