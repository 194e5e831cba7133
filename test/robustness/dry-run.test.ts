/**
 * `Pipeline.check()`, the one-step dry run, and its use at API startup: a pipeline whose files load
 * but which cannot generate is skipped with a log line, so it never becomes the default.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { MANIFEST_FILE } from "../../core/manifest.ts";
import { schedulerNames } from "../../plugins/schedulers/index.ts";
import { diffgraph, loadTiny, tinyDoc } from "../helpers.ts";

const base = mkdtempSync(join(tmpdir(), "dg-dryrun-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** tiny-sd's pipeline over a copy of its folder whose UNet is emoji-64's: every file loads, the first UNet call fails. */
function brokenPipeline(dir: string, name: string): string {
  const model = join(base, `${name}-model`);
  cpSync("models/tiny-sd", model, { recursive: true });
  rmSync(join(model, MANIFEST_FILE)); // the manifest would catch the swap at load; the dry run must catch it without
  copyFileSync("models/emoji-64/unet/model.onnx", join(model, "unet/model.onnx"));
  const doc = tinyDoc();
  doc.name = name;
  doc.model = model;
  writeFileSync(join(dir, `${name}.json`), JSON.stringify(doc));
  return model;
}

describe("Pipeline.check", () => {
  test("one step for tiny-sd (PNDM without warm-up); four when the Runge–Kutta warm-up is on", async () => {
    const p = await loadTiny();
    expect((await p.check()).steps).toBe(1);
    const doc = tinyDoc();
    doc.nodes.denoise.config.scheduler.config = { skip_prk_steps: false };
    const warm = await loadTiny(doc);
    expect((await warm.check()).steps).toBe(4);
    await Promise.all([p.dispose(), warm.dispose()]);
  });

  test("every built-in scheduler passes with tiny-sd's scheduler config", async () => {
    for (const name of schedulerNames()) {
      const doc = tinyDoc();
      doc.nodes.denoise.config.scheduler.use = name;
      const p = await loadTiny(doc);
      const { steps } = await p.check();
      expect(steps).toBeLessThanOrEqual(name === "pndm" ? 4 : 1);
      await p.dispose();
    }
  });

  test("a pipeline that loads but cannot generate fails the check, naming the model file", async () => {
    const dir = join(base, "single");
    mkdirSync(dir);
    brokenPipeline(dir, "broken");
    const dg = await diffgraph();
    const p = await dg.openPipeline(join(dir, "broken.json"));
    await expect(p.check()).rejects.toThrow(/unet\/model\.onnx: inference failed .*encoder_hidden_states/);
    await p.dispose();
    await dg.dispose();
  });
});

describe("API startup", () => {
  test("a pipeline that fails its dry run is skipped with a log line and does not become the default", async () => {
    const { ApiService } = await import("../../api/service.ts");
    const { openSqliteStore } = await import("../../api/adapters/sqlite-bun.ts");
    const { pipelineFiles } = await import("../../api/adapters/pipeline-files-node.ts");
    const dir = join(base, "pipelines");
    mkdirSync(dir);
    brokenPipeline(dir, "aaa-broken"); // sorts first: without the dry run it would be the default
    const good = tinyDoc();
    good.name = "zzz-good";
    good.model = resolve("models/tiny-sd");
    writeFileSync(join(dir, "zzz-good.json"), JSON.stringify(good));
    const lines: string[] = [];
    const service = await ApiService.create({ diffgraph: await diffgraph(), store: openSqliteStore(join(base, "data")), pipelineFiles: await pipelineFiles(dir), log: (m) => lines.push(m) });
    expect([...service.pipelines.keys()]).toEqual(["zzz-good"]);
    expect(service.defaultPipeline).toBe("zzz-good");
    expect(lines.some((l) => /^pipelines: skipping .*aaa-broken\.json: dry run failed: .*unet\/model\.onnx: inference failed/.test(l))).toBe(true);
    await service.close();
  });
});
