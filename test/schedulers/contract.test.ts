import { schedulerPlugins } from "../../plugins/schedulers/index.ts";
import { runSchedulerContract, type ContractOptions } from "./contract.ts";

const options: Record<string, Omit<ContractOptions, "name">> = {
  ddpm: { stochastic: true },
  ddim: {},
  // diffusers' PNDM combines raw v outputs before converting them (kept, to match its numbers).
  pndm: { repeatsTimesteps: true, steps: [4, 7, 10, 50], recoverySteps: [4, 10, 25], agreeingTypes: ["sample"], noBeginIndex: true },
  euler: {},
  "euler-ancestral": { stochastic: true },
  heun: { repeatsTimesteps: true, heunPairs: true },
  "dpmpp-2m": {},
  lcm: { stochastic: true },
  unipc: {},
};

for (const plugin of schedulerPlugins) runSchedulerContract({ name: plugin.name, ...options[plugin.name] });

// Variants whose code paths differ from the defaults.
runSchedulerContract({ name: "ddim", config: { eta: 1 }, stochastic: true });
runSchedulerContract({ name: "ddpm", config: { variance_type: "fixed_large" }, stochastic: true });
runSchedulerContract({ name: "pndm", config: { skip_prk_steps: true }, repeatsTimesteps: true, agreeingTypes: ["sample"], beginSteps: [2, 3, 6] });
runSchedulerContract({ name: "euler", config: { use_karras_sigmas: true } });
runSchedulerContract({ name: "heun", config: { use_karras_sigmas: true }, repeatsTimesteps: true, heunPairs: true });
runSchedulerContract({ name: "dpmpp-2m", config: { solver_order: 1 } });
runSchedulerContract({ name: "dpmpp-2m", config: { use_karras_sigmas: true, final_sigmas_type: "zero" } });
runSchedulerContract({ name: "dpmpp-2m", config: { solver_type: "heun", lower_order_final: false } });
runSchedulerContract({ name: "dpmpp-2m", config: { algorithm_type: "sde-dpmsolver++", use_karras_sigmas: true }, stochastic: true });
runSchedulerContract({ name: "ddim", config: { beta_schedule: "squaredcos_cap_v2", set_alpha_to_one: false } });
runSchedulerContract({ name: "euler", config: { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 } });
runSchedulerContract({ name: "unipc", config: { solver_order: 3, solver_type: "bh1" } });
runSchedulerContract({ name: "unipc", config: { use_karras_sigmas: true, disable_corrector: [0, 1] } });
