/**
 * Euler ancestral sampler — k-diffusion's `sample_euler_ancestral` (Karras et al. 2022 setting;
 * ancestral step split of Ho et al. 2020 re-expressed in σ): from σ_i to σ_{i+1},
 * σ_up = √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²), σ_down = √(σ_{i+1}² − σ_up²),
 * x_{i+1} = x_i + (σ_down − σ_i)·(x_i − D(x_i; σ_i))/σ_i + σ_up·z. Stochastic: z from the rng.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS } from "./config.ts";
import type { SharedKey } from "./config.ts";
import { defineScheduler, like, requireRng, sameShape } from "./base.ts";
import { denoised, SigmaScheduler, type SigmaConfig } from "./discrete-sigma.ts";

const DEFAULTS = { ...BASE_DEFAULTS, timestep_spacing: "linspace" as const };
type Config = SigmaConfig & Omit<typeof DEFAULTS, SharedKey | "use_karras_sigmas" | "final_sigmas_type">;

export class EulerAncestralScheduler extends SigmaScheduler<Config> {
  constructor(config: Config) {
    // Not a key of this diffusers class: a reused config's use_karras_sigmas / final_sigmas_type are ignored.
    super("euler-ancestral", { ...config, use_karras_sigmas: false, final_sigmas_type: "zero" });
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "euler-ancestral step model output");
    const i = this.initStepIndex(timestep);
    const from = this.sigmas[i]!;
    const to = this.sigmas[i + 1]!;
    const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
    const down = Math.sqrt(to * to - up * up);
    const x = sample.data;
    const x0 = denoised(this.config.prediction_type, new Float32Array(x.length), modelOutput.data, x, from);
    const prev = new Float32Array(x.length);
    const dt = down - from;
    for (let j = 0; j < x.length; j++) prev[j] = x[j]! + ((x[j]! - x0[j]!) / from) * dt;
    if (up > 0) {
      const r = requireRng(rng, this.name, "each step but the last adds σ_up·z");
      for (let j = 0; j < x.length; j++) prev[j] = prev[j]! + up * r.normal();
    }
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "euler-ancestral",
  className: "EulerAncestralDiscreteScheduler",
  description: "Euler ancestral sampler in σ (k-diffusion sample_euler_ancestral); stochastic",
  defaults: DEFAULTS,
  create: (cfg) => new EulerAncestralScheduler(cfg),
});
