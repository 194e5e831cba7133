/**
 * Scheduler configs as current diffusers saves them (issue 16, part 6): newer constructor keys at
 * their defaults load, other values are refused by name; Python's bare -Infinity / NaN parse; and
 * settings a scheduler does not implement are refused instead of silently ignored.
 */
import { describe, expect, test } from "bun:test";
import { parsePythonJson } from "../../core/json.ts";
import { memorySource, ModelFileError, readJson, readModelJson } from "../../core/model-source.ts";
import { z } from "zod";
import { createSchedulerFromDiffusersConfig, getSchedulerPlugin, SchedulerConfigError } from "../../plugins/schedulers/index.ts";

/** DPMSolverMultistepScheduler.save_config() of diffusers 0.35 for SDXL's schedule, byte for byte as json.dump writes it. */
const DPM_SAVED = `{
  "_class_name": "DPMSolverMultistepScheduler",
  "_diffusers_version": "0.35.1",
  "algorithm_type": "dpmsolver++",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "dynamic_thresholding_ratio": 0.995,
  "euler_at_final": false,
  "final_sigmas_type": "zero",
  "flow_shift": 1.0,
  "lambda_min_clipped": -Infinity,
  "lower_order_final": true,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "rescale_betas_zero_snr": false,
  "sample_max_value": 1.0,
  "solver_order": 2,
  "solver_type": "midpoint",
  "steps_offset": 1,
  "thresholding": false,
  "time_shift_type": "exponential",
  "timestep_spacing": "leading",
  "trained_betas": null,
  "use_beta_sigmas": false,
  "use_dynamic_shifting": false,
  "use_exponential_sigmas": false,
  "use_flow_sigmas": false,
  "use_karras_sigmas": false,
  "use_lu_lambdas": false,
  "variance_type": null
}`;

/** UniPCMultistepScheduler.save_config() of diffusers 0.35. */
const UNIPC_SAVED = `{
  "_class_name": "UniPCMultistepScheduler",
  "_diffusers_version": "0.35.1",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "disable_corrector": [], "dynamic_thresholding_ratio": 0.995, "final_sigmas_type": "zero",
  "flow_shift": 1.0, "lower_order_final": true, "num_train_timesteps": 1000, "predict_x0": true,
  "prediction_type": "epsilon", "rescale_betas_zero_snr": false, "sample_max_value": 1.0,
  "shift_terminal": null, "solver_order": 2, "solver_p": null, "solver_type": "bh2", "steps_offset": 1,
  "thresholding": false, "time_shift_type": "exponential", "timestep_spacing": "linspace", "trained_betas": null,
  "use_beta_sigmas": false, "use_dynamic_shifting": false, "use_exponential_sigmas": false,
  "use_flow_sigmas": false, "use_karras_sigmas": false
}`;

function refusal(name: string, config: Record<string, unknown>): SchedulerConfigError {
  try {
    getSchedulerPlugin(name).resolve(config);
  } catch (err) {
    expect(err).toBeInstanceOf(SchedulerConfigError);
    return err as SchedulerConfigError;
  }
  throw new Error(`${name} accepted ${JSON.stringify(config)}`);
}

describe("Python JSON (bare NaN / Infinity / -Infinity)", () => {
  test("parses the non-finite tokens as numbers, leaves them alone inside strings", () => {
    expect(parsePythonJson('{"a": -Infinity, "b": [NaN, Infinity, 1e3], "s": "NaN, -Infinity \\" Infinity"}')).toEqual({
      a: -Infinity,
      b: [NaN, Infinity, 1000],
      s: 'NaN, -Infinity " Infinity',
    });
  });
  test("plain JSON is unchanged and bad JSON is still an error", () => {
    expect(parsePythonJson('{"x": [1, "y", null, true]}')).toEqual({ x: [1, "y", null, true] });
    expect(() => parsePythonJson('{"a": -Inf}')).toThrow();
    expect(() => parsePythonJson('{"a": Infinityx}')).toThrow();
  });
  test("a model folder's scheduler_config.json with lambda_min_clipped: -Infinity reads (it failed as 'not valid JSON')", async () => {
    const src = memorySource({ "scheduler/scheduler_config.json": DPM_SAVED }, "models/x");
    const json = await readModelJson(src, "scheduler/scheduler_config.json", z.looseObject({}));
    expect(json.lambda_min_clipped).toBe(-Infinity);
    const bad = memorySource({ "scheduler/scheduler_config.json": '{"beta_start": 0.1,, }' }, "models/x");
    await expect(readJson(bad, "scheduler/scheduler_config.json")).rejects.toThrow(/models\/x\/scheduler\/scheduler_config.json: is not valid JSON/);
  });
  test("NaN where a number is needed is an error naming the key", () => {
    const cfg = parsePythonJson('{"_class_name": "DDIMScheduler", "beta_start": NaN}');
    expect(() => createSchedulerFromDiffusersConfig(cfg)).toThrow(/^beta_start/);
  });
});

describe("configs saved by current diffusers load", () => {
  test("DPM-Solver++ (use_dynamic_shifting, time_shift_type, use_flow_sigmas, flow_shift at their defaults) gives the schedule of the same config without them", () => {
    const saved = parsePythonJson(DPM_SAVED) as Record<string, unknown>;
    const s = createSchedulerFromDiffusersConfig(saved).createScheduler();
    const { use_dynamic_shifting: _a, time_shift_type: _b, use_flow_sigmas: _c, flow_shift: _d, ...older } = saved;
    const o = createSchedulerFromDiffusersConfig(older).createScheduler();
    s.setTimesteps(12);
    o.setTimesteps(12);
    expect(s.timesteps).toEqual(o.timesteps);
    expect(s.timesteps[0]).toBe(913); // leading spacing, steps_offset 1: ⌊1000/13⌋·12 + 1 = 76·12 + 1
  });
  test("UniPC (shift_terminal null, use_dynamic_shifting false, time_shift_type exponential)", () => {
    const s = createSchedulerFromDiffusersConfig(parsePythonJson(UNIPC_SAVED)).createScheduler();
    s.setTimesteps(4);
    expect(s.timesteps).toEqual([999, 749, 500, 250]);
  });
});

describe("values a scheduler does not implement are refused by name", () => {
  for (const [name, key, value] of [
    ["dpmpp-2m", "use_dynamic_shifting", true],
    ["dpmpp-2m", "time_shift_type", "linear"],
    ["dpmpp-2m", "use_flow_sigmas", true],
    ["unipc", "use_dynamic_shifting", true],
    ["unipc", "time_shift_type", "linear"],
    ["unipc", "shift_terminal", 0.1],
    ["heun", "use_exponential_sigmas", true],
    ["heun", "use_beta_sigmas", true],
  ] as const) {
    test(`${name}: ${key} = ${JSON.stringify(value)}`, () => {
      const err = refusal(name, { [key]: value });
      expect(err.key).toBe(key);
      expect(err.message).toBe(`${key} (${JSON.stringify(value)}) is not supported by the ${name} scheduler (supported: ${err.message.split("(supported: ")[1]!.slice(0, -1)})`);
      expect(err.message).toContain(`is not supported by the ${name} scheduler`);
    });
  }
  test("an unknown time_shift_type is an error naming the key and the allowed values", () => {
    const err = refusal("unipc", { time_shift_type: "cubic" });
    expect(err.key).toBe("time_shift_type");
    expect(err.message).toMatch(/time_shift_type "cubic" is unknown/);
  });
  test("the same keys at their defaults are accepted by each", () => {
    expect(getSchedulerPlugin("heun").resolve({ use_exponential_sigmas: false, use_beta_sigmas: null }).use_beta_sigmas).toBe(null);
    expect(getSchedulerPlugin("unipc").resolve({ shift_terminal: null, use_dynamic_shifting: false }).shift_terminal).toBe(null);
  });
  test("in a model folder the refusal names the file and the key", async () => {
    const src = memorySource({ "scheduler/scheduler_config.json": DPM_SAVED.replace('"time_shift_type": "exponential"', '"time_shift_type": "linear"') }, "models/x");
    const json = await readModelJson(src, "scheduler/scheduler_config.json", z.looseObject({}));
    expect(() => createSchedulerFromDiffusersConfig(json)).toThrow(/^time_shift_type \("linear"\) is not supported by the dpmpp-2m scheduler/);
    expect(ModelFileError).toBeDefined();
  });
});
