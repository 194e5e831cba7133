/**
 * The denoising loop's timing hook (RunOptions.profile) and its event economy (stepsWatched): what
 * they record and change, never how long anything took.
 */
import { describe, expect, test } from "bun:test";
import { emptyStepProfile, type PipelineEvent } from "../../core/node.ts";
import { loadTiny } from "../helpers.ts";

describe("denoise step profile", () => {
  test("a profiled run accounts every step in each part and draws the same latents as an unprofiled one", async () => {
    const pipeline = await loadTiny();
    const input = { prompt: "a red heart", steps: 5, seed: 3, guidanceScale: 4, scheduler: "ddim" };
    const plain = await pipeline.run(input);
    const prof = emptyStepProfile();
    const profiled = await pipeline.run(input, { profile: prof });
    expect(prof.steps).toBe(5);
    for (const k of ["setup", "scheduler", "guidance", "predict", "events", "yielding"] as const) {
      expect(Number.isFinite(prof[k])).toBe(true);
      expect(prof[k]).toBeGreaterThanOrEqual(0);
    }
    expect(prof.predict).toBeGreaterThan(0);
    expect(prof.yielding).toBe(0); // onnxruntime-node does not block the event loop between calls
    expect([...(profiled.outputs.denoise!.latents as { data: Float32Array }).data]).toEqual([...(plain.outputs.denoise!.latents as { data: Float32Array }).data]);
  });

  test("step events reach a listener and a stream; a run with neither draws the same image", async () => {
    const pipeline = await loadTiny();
    const input = { prompt: "a cat", steps: 3, seed: 9, scheduler: "ddim" };
    const seen: PipelineEvent[] = [];
    const listened = await pipeline.run(input, { onEvent: (e) => seen.push(e) });
    const steps = seen.filter((e) => e.type === "step");
    expect(steps.map((e) => e.step)).toEqual([1, 2, 3]);
    const streamed: PipelineEvent[] = [];
    const s = pipeline.stream(input);
    for await (const e of s.events) streamed.push(e);
    expect(streamed.filter((e) => e.type === "step")).toHaveLength(3);
    const alone = await pipeline.run(input);
    expect([...alone.images.data]).toEqual([...listened.images.data]);
  });
});
