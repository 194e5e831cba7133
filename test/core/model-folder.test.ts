import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { diffgraph, maxAbsDiff, tinyDoc } from "../helpers.ts";

describe("opening pipelines", () => {
  test("a diffusers ONNX model folder opens as a pipeline, scheduler from scheduler_config.json", async () => {
    const dg = await diffgraph();
    const fromFolder = await dg.openPipeline("models/tiny-sd");
    const fromFile = await dg.openPipeline("pipelines/tiny-sd.json");
    expect((fromFolder.doc.nodes.denoise!.config as { scheduler: { use: string } }).scheduler.use).toBe("pndm"); // PNDMScheduler
    expect(fromFolder.defaults.height).toBe(512); // no unet/config.json: SD 1.x's native size
    const a = await fromFolder.run({ prompt: "cat", steps: 3, seed: 1, height: 64, width: 64 });
    const b = await fromFile.run({ prompt: "cat", steps: 3, seed: 1 });
    expect(maxAbsDiff(a.images.data, b.images.data)).toBeLessThan(1e-6);
    await dg.dispose();
  });

  test("a user plugin loads by module path, and its metric lands in the result", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dg-user-"));
    const doc = tinyDoc();
    doc.model = resolve("models/tiny-sd");
    doc.nodes.bright = { use: `file://${resolve("test/fixtures/plugins/mean-brightness.ts")}`, config: { scale: 100 }, inputs: { images: "decode.images" } };
    writeFileSync(join(dir, "p.json"), JSON.stringify(doc));
    const dg = await diffgraph();
    const p = await dg.openPipeline(join(dir, "p.json"));
    const r = await p.run({ prompt: "sun", steps: 2, seed: 1 }, { metrics: true });
    let s = 0;
    for (const v of r.images.data) s += v;
    expect(r.metrics["bright.mean"]).toBeCloseTo((100 * s) / r.images.data.length, 4);
    await dg.dispose();
  });

  test("a module that is not a plugin is rejected naming the node", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dg-user-"));
    writeFileSync(join(dir, "notaplugin.ts"), "export const x = 1;\n");
    const doc = tinyDoc();
    doc.model = resolve("models/tiny-sd");
    doc.nodes.bad = { use: "./notaplugin.ts", inputs: {} };
    writeFileSync(join(dir, "p.json"), JSON.stringify(doc));
    const dg = await diffgraph();
    await expect(dg.openPipeline(join(dir, "p.json"))).rejects.toThrow(/nodes\.bad\.use: module .*notaplugin\.ts does not export a plugin definition/);
  });
});
