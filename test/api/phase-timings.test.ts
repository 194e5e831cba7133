/**
 * `generate --timings` (api/cli/phase-timings.ts) must load models as the untimed CLI does: the
 * timed adapter wraps the backends, and what it does not time (the cores for the thread policy, the
 * optimized-graph cache) has to pass through. Before this was checked the timed CLI ran without the
 * graph cache, so `bun run bench` reported a UNet session creation the real CLI does not pay.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { phaseRecorder } from "../../api/cli/phase-timings.ts";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { loadRuntimeAdapter } from "../../core/runtime.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const dir = mkdtempSync(join(tmpdir(), "diffgraph-timings-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("the timed adapter keeps the host's cores and optimized-graph cache", async () => {
  const base = await loadRuntimeAdapter();
  const { adapter } = await phaseRecorder();
  expect(adapter.onnxBackends.cores).toBe(base.onnxBackends.cores);
  expect(typeof adapter.onnxBackends.graphCache).toBe("function");
  expect(adapter.onnxBackends.graphCache!(dir)?.dir).toBe(dir);
});

test("timed later starts load the VAE decoder from the graph cache (bytes, then by path once settled), timed under its file's name with the lookup", async () => {
  const froms: string[] = [];
  for (let start = 0; start < 3; start++) {
    // The third start comes after the graph file has settled (fileStamp): onnxruntime gets its path.
    if (start === 2) await Bun.sleep(1100);
    const phases = await phaseRecorder();
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", graphCache: dir, adapter: phases.adapter });
    try {
      const model = await dg.onnx.load(phases.adapter.fileSource("models/emoji-64"), "vae_decoder/model.onnx");
      await model.run({ latent_sample: { dims: [1, 4, 8, 8], data: new Float32Array(256) } });
      froms.push(...dg.onnx.created.map((c) => c.from));
      const [timed] = phases.timings.sessions;
      expect(timed?.file).toEndWith("emoji-64/vae_decoder/model.onnx");
      expect(timed?.runs).toBe(1);
      // Loading counts from the cache lookup (part of model load, not of the node that asked).
      expect(timed!.cacheLookupMs).toBeGreaterThanOrEqual(0);
      expect(timed!.created[1] - timed!.created[0]).toBeGreaterThanOrEqual(timed!.cacheLookupMs);
      if (start > 0) expect(timed!.cacheLookupMs).toBeGreaterThan(0);
    } finally {
      await dg.dispose();
    }
  }
  expect(froms).toEqual(["model", "cache", "cache"]);
});
