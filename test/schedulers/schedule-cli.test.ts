import { afterAll, describe, expect, spyOn, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { formatTable, main, scheduleRows } from "../../api/cli/schedule.ts";
import { linePlotSvg, niceTicks } from "../../api/plot.ts";
import { makeScheduler } from "./harness.ts";

const dir = mkdtempSync(join(tmpdir(), "diffgraph-schedule-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Run the CLI, capturing what it prints. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const error = spyOn(console, "error").mockImplementation((...a: unknown[]) => void err.push(a.join(" ")));
  try {
    return { code: await main(args), out: out.join("\n"), err: err.join("\n") };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

describe("schedule CLI", () => {
  test("prints one row per visited step: timestep, ᾱ_t, σ_t, log-SNR", async () => {
    const { code, out } = await run(["--scheduler", "ddim", "--steps", "10"]);
    expect(code).toBe(0);
    const lines = out.split("\n");
    expect(lines[0]).toMatch(/step\s+timestep\s+ᾱ_t\s+σ_t\s+log-SNR/);
    expect(lines.length).toBe(12);
    expect(lines[2]).toMatch(/^\s+1\s+900\s+0\.000270\s+60\.82\d+\s+-8\.2159$/);
  });

  test("rows agree with the training schedule", () => {
    const s = makeScheduler("ddim");
    s.setTimesteps(5);
    const data = s.schedule();
    for (const r of scheduleRows(data)) {
      expect(r.alphaCumprod).toBeCloseTo(data.alphasCumprod[r.timestep]!, 12);
      expect(r.logSnr).toBeCloseTo(Math.log(r.alphaCumprod / (1 - r.alphaCumprod)), 9);
    }
    expect(formatTable(data).split("\n").length).toBe(7);
  });

  test("--config picks the scheduler from _class_name; --set overrides keys; --json", async () => {
    const cfg = join(dir, "scheduler_config.json");
    await Bun.write(cfg, JSON.stringify({ _class_name: "EulerDiscreteScheduler", beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 }));
    const { code, out } = await run(["--config", cfg, "--steps", "4", "--set", "timestep_spacing=trailing", "--json"]);
    expect(code).toBe(0);
    const data = JSON.parse(out);
    expect(data.scheduler).toBe("euler");
    expect(data.timesteps).toEqual([999, 749, 499, 249]);
    expect(data.sigmas.length).toBe(5);
  });

  test("--plot writes a PNG", async () => {
    const png = join(dir, "plot.png");
    const { code } = await run(["--scheduler", "dpmpp-2m", "--steps", "20", "--set", "use_karras_sigmas=true", "--plot", png]);
    expect(code).toBe(0);
    const meta = await sharp(readFileSync(png)).metadata();
    expect(meta.format).toBe("png");
    expect(meta.width).toBe(900);
  });

  test("bad arguments are usage errors (exit 2) and bad configs name the key (exit 1)", async () => {
    for (const args of [[], ["--scheduler", "ddim"], ["--scheduler", "ddim", "--steps", "ten"], ["--scheduler", "ddim", "--steps", "-3"], ["--bogus"]]) {
      const r = await run(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toMatch(/^schedule: /);
    }
    const tooMany = await run(["--scheduler", "ddim", "--steps", "2000"]);
    expect(tooMany.code).toBe(1);
    expect(tooMany.err).toMatch(/num_inference_steps \(2000\) cannot exceed num_train_timesteps \(1000\)/);
    const unknown = await run(["--scheduler", "nope", "--steps", "3"]);
    expect(unknown.err).toMatch(/unknown scheduler "nope".*ddim/);
    const badKey = await run(["--scheduler", "ddim", "--steps", "3", "--set", "beta_end=0.00001"]);
    expect(badKey.err).toMatch(/beta_end \(0\.00001\) must be ≥ beta_start \(0\.0001\)/);
  });
});

describe("plot helper", () => {
  test("nice ticks", () => {
    expect(niceTicks(0, 1000)).toEqual([0, 200, 400, 600, 800, 1000]);
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(-3, 7, 6)).toEqual([-2, 0, 2, 4, 6]);
  });
  test("SVG has title, axes labels, one path per line series and escapes text", () => {
    const svg = linePlotSvg({
      title: "a < b",
      x: { label: "x" },
      y: { label: "y" },
      y2: { label: "z", log: true },
      series: [
        { name: "one", x: [0, 1, 2], y: [0, 1, 4] },
        { name: "two", x: [0, 1, 2], y: [1, 10, 100], axis: "right", style: "markers" },
      ],
    });
    expect(svg).toContain("a &lt; b");
    expect(svg.match(/<polyline/g)?.length).toBe(1);
    expect(svg.match(/<circle/g)?.length).toBe(4); // 3 markers + legend swatch
    expect(svg).toContain("two (right axis)");
  });
});
