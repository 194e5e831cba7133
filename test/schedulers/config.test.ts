import { describe, expect, test } from "bun:test";
import {
  createSchedulerFromDiffusersConfig,
  DIFFUSERS_CLASS_TO_SCHEDULER,
  getSchedulerPlugin,
  schedulerFromDiffusersConfig,
  schedulerPlugins,
  SchedulerConfigError,
} from "../../plugins/schedulers/index.ts";
import { makeScheduler } from "./harness.ts";

/** Stable Diffusion 1.5's scheduler/scheduler_config.json. */
const SD15 = {
  _class_name: "PNDMScheduler",
  _diffusers_version: "0.6.0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};

function rejects(config: Record<string, unknown>, key: string, message?: RegExp, name = "ddim"): void {
  let err: unknown;
  try {
    getSchedulerPlugin(name).resolve(config);
  } catch (e) {
    err = e;
  }
  expect(err, JSON.stringify(config)).toBeInstanceOf(SchedulerConfigError);
  expect((err as SchedulerConfigError).key).toBe(key);
  expect((err as Error).message.startsWith(key)).toBe(true);
  if (message) expect((err as Error).message).toMatch(message);
}

describe("scheduler config", () => {
  test("a model folder's scheduler_config.json picks its class and loads", () => {
    const { plugin, config } = schedulerFromDiffusersConfig(SD15);
    expect(plugin.name).toBe("pndm");
    expect(config.skip_prk_steps).toBe(true);
    expect(config._class_name).toBe("PNDMScheduler");
    const s = createSchedulerFromDiffusersConfig(SD15).createScheduler();
    s.setTimesteps(5);
    expect(s.timesteps).toEqual([801, 601, 601, 401, 201, 1]);
  });

  test("from_config: another scheduler reuses the config; foreign keys are kept and ignored", () => {
    const { plugin, config } = schedulerFromDiffusersConfig(SD15, { scheduler: "euler" });
    expect(plugin.name).toBe("euler");
    expect(config.skip_prk_steps).toBe(true); // PNDM's key, kept
    expect(config.beta_schedule).toBe("scaled_linear");
    expect(config.timestep_spacing).toBe("linspace"); // Euler's default, as diffusers' from_config
    const s = createSchedulerFromDiffusersConfig(SD15, { scheduler: "euler", overrides: { timestep_spacing: "trailing" } }).createScheduler();
    s.setTimesteps(4);
    expect(s.timesteps).toEqual([999, 749, 499, 249]);
  });

  test("every scheduler's resolved config builds every other scheduler (from_config both ways)", () => {
    for (const a of schedulerPlugins)
      for (const b of schedulerPlugins) {
        const { config } = schedulerFromDiffusersConfig(a.resolve({}), { scheduler: b.name });
        const s = b.create(config).createScheduler();
        s.setTimesteps(10);
        expect(s.timesteps.length, `${a.name} → ${b.name}`).toBeGreaterThanOrEqual(10);
      }
  });

  test("every diffusers class maps to a plugin name; plugins carry their class", () => {
    for (const p of schedulerPlugins) expect(DIFFUSERS_CLASS_TO_SCHEDULER[p.className]).toBe(p.name);
    expect(schedulerFromDiffusersConfig({ ...SD15, _class_name: "UniPCMultistepScheduler" }).plugin.name).toBe("unipc");
    expect(() => schedulerFromDiffusersConfig({ ...SD15, _class_name: "KarrasVeScheduler" })).toThrow(/KarrasVeScheduler/);
  });

  test("resolved configs are frozen", () => {
    const { config } = schedulerFromDiffusersConfig(SD15);
    expect(Object.isFrozen(config)).toBe(true);
  });

  test("the zod schema on the plugin definition resolves defaults", () => {
    const cfg = getSchedulerPlugin("dpmpp-2m").configSchema.parse({ solver_order: 1 }) as Record<string, unknown>;
    expect(cfg.solver_order).toBe(1);
    expect(cfg.algorithm_type).toBe("dpmsolver++");
  });

  test("bad configs are rejected with an error naming the key", () => {
    rejects({ beta_start: 0.001, beta_end: 0.0001 }, "beta_end", /beta_end \(0\.0001\) must be ≥ beta_start \(0\.001\)/);
    rejects({ beta_schedule: "cosine" }, "beta_schedule", /beta_schedule "cosine" is unknown \(expected one of linear, scaled_linear, squaredcos_cap_v2\)/);
    rejects({ prediction_type: "noise" }, "prediction_type");
    rejects({ timestep_spacing: "uniform" }, "timestep_spacing");
    rejects({ num_train_timesteps: -5 }, "num_train_timesteps");
    rejects({ steps_offset: -1 }, "steps_offset");
    rejects({ clip_sample: "yes" }, "clip_sample");
    rejects({ beta_strat: 0.001 }, "beta_strat", /not a config key of any diffusers scheduler/);
    rejects({ trained_betas: [0.1, 0.2], num_train_timesteps: 3 }, "trained_betas");
    rejects({ solver_order: 3 }, "solver_order", /not supported by the dpmpp-2m/, "dpmpp-2m");
    rejects({ algorithm_type: "sde-dpmsolver" }, "algorithm_type", /dpmpp-2m/, "dpmpp-2m"); // the noise-prediction SDE form is not implemented
    rejects({ variance_type: "learned_range" }, "variance_type", /ddpm/, "ddpm");
    rejects({ use_exponential_sigmas: true }, "use_exponential_sigmas", /euler/, "euler");
  });

  test("the plugin's configSchema reports bad values as issues at the key (for pipeline validation)", () => {
    const bad = getSchedulerPlugin("dpmpp-2m").configSchema.safeParse({ solver_order: 3 });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]!.path).toEqual(["solver_order"]);
    const unknown = getSchedulerPlugin("ddim").configSchema.safeParse({ beta_strat: 1 });
    expect(unknown.error!.issues[0]!.path).toEqual(["beta_strat"]);
    const order = getSchedulerPlugin("ddim").configSchema.safeParse({ beta_start: 0.5, beta_end: 0.1 });
    expect(order.error!.issues[0]!.message).toBe("beta_end (0.1) must be ≥ beta_start (0.5)");
  });

  test("metadata keys are accepted; keys of schedulers not implemented here are accepted too", () => {
    expect(() => getSchedulerPlugin("ddim").resolve({ _class_name: "X", _use_default_values: ["a"], solver_p: null })).not.toThrow();
  });

  test("setTimesteps rejects negative, fractional and too many steps, naming num_inference_steps", () => {
    for (const name of schedulerPlugins.map((p) => p.name)) {
      const s = makeScheduler(name);
      for (const bad of [-1, 0, 2.5, 1001]) {
        expect(() => s.setTimesteps(bad), `${name} ${bad}`).toThrow(/^num_inference_steps \(/);
      }
    }
    expect(() => makeScheduler("lcm").setTimesteps(60)).toThrow(/original_inference_steps \(50\)/);
    expect(() => makeScheduler("pndm").setTimesteps(3)).toThrow(/skip_prk_steps/);
  });

  test("stepping before setTimesteps says what to call", () => {
    const s = makeScheduler("euler");
    const x = { dims: [1], data: Float32Array.of(0) };
    expect(() => s.step(x, 999, x)).toThrow(/setTimesteps/);
  });
});

test("leading spacing with steps_offset never steps past the last training timestep", async () => {
  const { getSchedulerPlugin } = await import("../../plugins/schedulers/index.ts");
  const s = getSchedulerPlugin("ddim").create({ steps_offset: 1, timestep_spacing: "leading" }).createScheduler();
  expect(() => s.setTimesteps(1000)).toThrow(/num_inference_steps: 1000 steps .* reach timestep 1000, past 999; use at most 999 steps/);
  s.setTimesteps(999);
  expect(Math.max(...s.timesteps)).toBeLessThanOrEqual(999);
});
