/**
 * `bun run schedule --scheduler NAME --steps N [--config scheduler_config.json] [--set key=value …]
 *   [--plot out.png] [--json]`
 *
 * Prints a scheduler's schedule for N steps — per visited step the timestep, ᾱ_t, σ_t and log-SNR —
 * and optionally draws ᾱ_t and σ_t over the timesteps (the training curves, with the visited steps
 * marked). With `--config` and no `--scheduler`, the config's `_class_name` picks the scheduler.
 */
import { parseArgs } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import { linePlotPng } from "../plot.ts";
import {
  createSchedulerFromDiffusersConfig,
  DIFFUSERS_CLASS_TO_SCHEDULER,
  schedulerNames,
} from "../../plugins/schedulers/index.ts";
import type { ScheduleData } from "../../core/scheduler.ts";

const HELP = `diffgraph schedule — show a scheduler's noise schedule

  --scheduler NAME   ${schedulerNames().join(", ")}
                     (default: the config's _class_name)
  --steps N          number of inference steps (required)
  --config FILE      a diffusers scheduler_config.json (default: the scheduler's own defaults)
  --set KEY=VALUE    override a config key (repeatable; VALUE is JSON, or a bare string)
  --plot FILE        also draw ᾱ_t and σ_t over the timesteps to this PNG
  --json             print the schedule as JSON instead of a table`;

class UsageError extends Error {}

export interface ScheduleRow {
  step: number;
  timestep: number;
  alphaCumprod: number;
  sigma: number;
  logSnr: number;
}

/** One row per visited step; ᾱ from σ (σ² = (1−ᾱ)/ᾱ), which also covers fractional timesteps. */
export function scheduleRows(data: ScheduleData): ScheduleRow[] {
  return data.timesteps.map((timestep, i) => {
    const sigma = data.sigmas[i]!;
    return { step: i + 1, timestep, alphaCumprod: 1 / (1 + sigma * sigma), sigma, logSnr: data.logSnr[i]! };
  });
}

export function formatTable(data: ScheduleData): string {
  const rows = scheduleRows(data);
  const fmt = (v: number, digits = 6) => (Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-4 && v !== 0) ? v.toExponential(4) : v.toFixed(digits));
  const table = [
    ["step", "timestep", "ᾱ_t", "σ_t", "log-SNR"],
    ...rows.map((r) => [String(r.step), fmt(r.timestep, 3), fmt(r.alphaCumprod), fmt(r.sigma, 5), fmt(r.logSnr, 4)]),
  ];
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => [...row[c]!].length)));
  const line = (row: string[]) => row.map((cell, c) => cell.padStart(widths[c]!)).join("  ");
  const final = data.sigmas.length > data.timesteps.length ? `\nfinal σ after the last step: ${data.sigmas[data.sigmas.length - 1]}` : "";
  return [line(table[0]!), widths.map((w) => "─".repeat(w)).join("  "), ...table.slice(1).map(line)].join("\n") + final;
}

export async function plotSchedule(data: ScheduleData, subtitle: string): Promise<Buffer> {
  const T = data.alphasCumprod.length;
  const t = Array.from({ length: T }, (_, i) => i);
  const rows = scheduleRows(data);
  // Past ~60 visited steps, markers would bury the curves they sit on.
  const marked = rows.length <= 60;
  return linePlotPng({
    title: `${data.scheduler}: ${data.numInferenceSteps} steps`,
    subtitle,
    x: { label: "timestep t (sampling runs right to left)" },
    y: { label: "ᾱ_t (signal kept)", min: 0, max: 1 },
    y2: { label: "σ_t = √((1−ᾱ_t)/ᾱ_t), log scale", log: true },
    series: [
      { name: "ᾱ_t", x: t, y: data.alphasCumprod, color: "#1f77b4" },
      { name: "σ_t", x: t, y: data.alphasCumprod.map((a) => Math.sqrt((1 - a) / a)), axis: "right", color: "#d62728", dashed: true },
      ...(marked
        ? [
            { name: "ᾱ_t, visited", x: rows.map((r) => r.timestep), y: rows.map((r) => r.alphaCumprod), style: "markers" as const, color: "#1f77b4" },
            { name: "σ_t, visited", x: rows.map((r) => r.timestep), y: rows.map((r) => r.sigma), axis: "right" as const, style: "markers" as const, color: "#d62728" },
          ]
        : []),
    ],
  });
}

function parseSet(entries: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const e of entries) {
    const eq = e.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set expects KEY=VALUE, got "${e}"`);
    const key = e.slice(0, eq);
    const raw = e.slice(eq + 1);
    try {
      out[key] = JSON.parse(raw);
    } catch {
      out[key] = raw;
    }
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  // parseArgs would read "--steps -3" as an option; say what is wrong with the value instead.
  const stepsAt = argv.indexOf("--steps");
  if (stepsAt >= 0 && /^-\d/.test(argv[stepsAt + 1] ?? "")) {
    console.error(`schedule: --steps must be a positive integer, got "${argv[stepsAt + 1]}"\n\n${HELP}`);
    return 2;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        scheduler: { type: "string" },
        steps: { type: "string" },
        config: { type: "string" },
        set: { type: "string", multiple: true },
        plot: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    console.error(`schedule: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  try {
    if (values.steps === undefined) throw new UsageError("--steps N is required");
    if (!/^\d+$/.test(values.steps)) throw new UsageError(`--steps must be a positive integer, got "${values.steps}"`);
    const steps = Number(values.steps);
    let json: Record<string, unknown> = {};
    if (values.config) {
      let text: string;
      try {
        text = await readFile(values.config, "utf8");
      } catch (err) {
        throw new UsageError(`cannot read --config ${values.config}: ${(err as Error).message}`);
      }
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw new UsageError(`--config ${values.config} is not valid JSON: ${(err as Error).message}`);
      }
    }
    const name = values.scheduler ?? (typeof json._class_name === "string" ? DIFFUSERS_CLASS_TO_SCHEDULER[json._class_name] : undefined);
    if (!values.scheduler && !values.config) throw new UsageError("--scheduler NAME is required (or --config with a _class_name)");
    const instance = createSchedulerFromDiffusersConfig(json, { scheduler: name, overrides: parseSet(values.set ?? []) });
    const scheduler = instance.createScheduler();
    scheduler.setTimesteps(steps);
    const data = scheduler.schedule();
    if (values.json) console.log(JSON.stringify({ config: instance.config, ...data }));
    else console.log(formatTable(data));
    if (values.plot) {
      const c = instance.config;
      const betas = c.trained_betas ? "trained β" : c.beta_schedule === "squaredcos_cap_v2" ? "cosine β" : `${c.beta_schedule} β ${c.beta_start}…${c.beta_end}`;
      const visited = data.timesteps.length > 60 ? `, ${data.timesteps.length} visited steps (not marked)` : "";
      const subtitle = `${betas}, T = ${c.num_train_timesteps}, ${c.timestep_spacing} spacing${c.use_karras_sigmas ? ", Karras σ" : ""}${c.rescale_betas_zero_snr ? ", zero terminal SNR" : ""}${visited}`;
      await writeFile(values.plot, await plotSchedule(data, subtitle));
      if (!values.json) console.log(`\nplot written to ${values.plot}`);
    }
    return 0;
  } catch (err) {
    const usage = err instanceof UsageError;
    console.error(`schedule: ${(err as Error).message}${usage ? `\n\n${HELP}` : ""}`);
    return usage ? 2 : 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
