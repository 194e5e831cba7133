/**
 * The executor against fake nodes (no models): ancestry-keyed caching, isolation between graphs of
 * different models sharing one cache, cancellation, concurrency. Plus the real case that leaked:
 * one Diffgraph running tiny-sd, then emoji-64, with the same prompt.
 */
import { describe, expect, test } from "bun:test";
import { z } from "zod";
import { execute } from "../../core/executor.ts";
import { NodeCache } from "../../core/node-cache.ts";
import type { ExecutableGraph, GraphNode, NodeType, PipelineEvent, Values } from "../../core/node.ts";
import type { Tensor } from "../../core/tensor.ts";
import { diffgraph } from "../helpers.ts";

interface FakeSpec {
  readonly deterministic: boolean;
  readonly inputs: Record<string, "text" | "embeddings" | "images">;
  readonly wires: Record<string, [string, string]>;
  readonly optional?: string[];
  readonly run: (inputs: Values) => Promise<Values> | Values;
}

/** A graph of fake nodes; `calls` counts real (uncached) runs per node. */
function fakeGraph(specs: Record<string, FakeSpec>, opts: { identity: string; cache?: NodeCache; output: [string, string] }) {
  const calls: Record<string, number> = {};
  const nodes = new Map<string, GraphNode>();
  for (const [name, spec] of Object.entries(specs)) {
    const type: NodeType = {
      name: `fake-${name}`,
      kind: "encoder",
      inputs: spec.inputs,
      optionalInputs: spec.optional,
      outputs: { out: "embeddings" },
      configSchema: z.object({}),
      deterministic: spec.deterministic,
      create: async () => ({ run: async () => ({}) }),
    };
    nodes.set(name, {
      name,
      type,
      config: { n: name },
      wires: spec.wires,
      instance: {
        run: async (inputs) => {
          calls[name] = (calls[name] ?? 0) + 1;
          return spec.run(inputs);
        },
      },
    });
  }
  const graph: ExecutableGraph = {
    nodes,
    order: [...nodes.keys()],
    output: opts.output,
    preview: undefined,
    defaults: { steps: 1, guidanceScale: 1, seed: 0, batchSize: 1, height: 8, width: 8, strength: 1 },
    identity: opts.identity,
    cache: opts.cache,
  };
  return { graph, calls };
}

const tensor = (v: number, n = 4): Tensor => ({ dims: [1, n], data: new Float32Array(n).fill(v) });
const textLen = (inputs: Values) => tensor((inputs.text as string[])[0]!.length);

/** encode($prompt) → decode(encode) → images; noise is non-deterministic like the denoising loop. */
function specs(marker: number): Record<string, FakeSpec> {
  return {
    encode: { deterministic: true, inputs: { text: "text" }, wires: { text: ["$", "prompt"] }, run: (i) => ({ out: tensor(marker + textLen(i).data[0]!) }) },
    noise: { deterministic: false, inputs: { e: "embeddings" }, wires: { e: ["encode", "out"] }, run: (i) => ({ out: i.e }) },
    after: { deterministic: true, inputs: { e: "embeddings" }, wires: { e: ["noise", "out"] }, run: (i) => ({ out: i.e }) },
    image: {
      deterministic: true,
      inputs: { img: "images" },
      optional: ["img"],
      wires: { img: ["$", "image"] },
      run: (i) => ({ out: i.img ? tensor((i.img as Tensor).data[0]!) : tensor(-1) }),
    },
  };
}

async function runOnce(graph: ExecutableGraph, input: { prompt: string; image?: Tensor }) {
  const events: PipelineEvent[] = [];
  const r = await execute(graph, input, { onEvent: (e) => events.push(e) }).result;
  const cached = Object.fromEntries(events.filter((e) => e.type === "node-end").map((e) => [e.node, (e as { cached: boolean }).cached]));
  return { r, cached };
}

describe("executor cache", () => {
  test("a node runs once for equal ancestry; nodes downstream of a non-deterministic one always run", async () => {
    const cache = new NodeCache();
    const { graph, calls } = fakeGraph(specs(100), { identity: "model-a", cache, output: ["after", "out"] });
    const a = await runOnce(graph, { prompt: "cat" });
    const b = await runOnce(graph, { prompt: "cat" });
    expect(a.cached.encode).toBe(false);
    expect(b.cached.encode).toBe(true);
    expect(b.cached.after).toBe(false);
    expect(calls).toEqual({ encode: 1, noise: 2, after: 2, image: 1 });
    expect(Array.from(b.r.images.data)).toEqual(Array.from(a.r.images.data));
    await runOnce(graph, { prompt: "dog!" });
    expect(calls.encode).toBe(2);
  });

  test("graphs of different models share a cache but never each other's outputs", async () => {
    const cache = new NodeCache();
    const a = fakeGraph(specs(100), { identity: "model-a", cache, output: ["encode", "out"] });
    const b = fakeGraph(specs(200), { identity: "model-b", cache, output: ["encode", "out"] });
    const ra = await runOnce(a.graph, { prompt: "" });
    const rb = await runOnce(b.graph, { prompt: "" });
    // Same plugin name, config and prompt: only the identity tells them apart.
    expect(rb.cached.encode).toBe(false);
    expect(ra.r.images.data[0]).toBe(100);
    expect(rb.r.images.data[0]).toBe(200);
    expect((await runOnce(a.graph, { prompt: "" })).r.images.data[0]).toBe(100);
  });

  test("run-input tensors are keyed by content: a different image misses, an equal copy hits", async () => {
    const cache = new NodeCache();
    const { graph, calls } = fakeGraph(specs(0), { identity: "m", cache, output: ["image", "out"] });
    expect((await runOnce(graph, { prompt: "x", image: tensor(0.25) })).r.images.data[0]).toBe(0.25);
    expect((await runOnce(graph, { prompt: "x", image: tensor(0.5) })).r.images.data[0]).toBe(0.5);
    const again = await runOnce(graph, { prompt: "x", image: tensor(0.25) });
    expect(again.cached.image).toBe(true);
    expect(again.r.images.data[0]).toBe(0.25);
    expect(calls.image).toBe(2);
  });

  test("without a cache nothing is served from one", async () => {
    const { graph, calls } = fakeGraph(specs(0), { identity: "m", output: ["encode", "out"] });
    await runOnce(graph, { prompt: "cat" });
    const b = await runOnce(graph, { prompt: "cat" });
    expect(b.cached.encode).toBe(false);
    expect(calls.encode).toBe(2);
  });
});

describe("executor scheduling", () => {
  test("independent nodes run concurrently", async () => {
    let running = 0;
    let peak = 0;
    const slow = async (i: Values) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 20));
      running--;
      return { out: textLen(i) };
    };
    const { graph } = fakeGraph(
      {
        a: { deterministic: false, inputs: { text: "text" }, wires: { text: ["$", "prompt"] }, run: slow },
        b: { deterministic: false, inputs: { text: "text" }, wires: { text: ["$", "negativePrompt"] }, run: slow },
      },
      { identity: "m", output: ["a", "out"] },
    );
    await runOnce(graph, { prompt: "p" });
    expect(peak).toBe(2);
  });

  test("a cancelled run stops before its next node with the signal's reason", async () => {
    const ac = new AbortController();
    const { graph, calls } = fakeGraph(
      {
        first: { deterministic: false, inputs: { text: "text" }, wires: { text: ["$", "prompt"] }, run: (i) => (ac.abort(), { out: textLen(i) }) },
        second: { deterministic: false, inputs: { e: "embeddings" }, wires: { e: ["first", "out"] }, run: (i) => ({ out: i.e }) },
      },
      { identity: "m", output: ["second", "out"] },
    );
    await expect(execute(graph, { prompt: "p" }, { signal: ac.signal }).result).rejects.toMatchObject({ name: "AbortError" });
    expect(calls).toEqual({ first: 1 });
  });
});

test("one Diffgraph: tiny-sd then emoji-64 with the same prompt each use their own text encoder", async () => {
  const dg = await diffgraph();
  try {
    const tiny = await dg.openPipeline("pipelines/tiny-sd.json");
    const emoji = await dg.openPipeline("pipelines/emoji-64.json");
    await tiny.run({ prompt: "", steps: 1, seed: 0 });
    // Before the cache keyed on the model, this reused tiny-sd's [1,77,32] embeddings and failed.
    const r = await emoji.run({ prompt: "", steps: 1, seed: 0 });
    expect(r.images.dims).toEqual([1, 3, 64, 64]);
    expect((r.outputs.prompt!.embeddings as Tensor).dims).toEqual([1, 16, 128]);
    await Promise.all([tiny.dispose(), emoji.dispose()]);
  } finally {
    await dg.dispose();
  }
});
