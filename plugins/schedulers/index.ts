/**
 * The scheduler plugin family and the bridge from diffusers model folders: a
 * `scheduler/scheduler_config.json` names its class (`"_class_name": "PNDMScheduler"`); that picks the
 * plugin unless the caller overrides it, and the same config is reused, as diffusers' `from_config`.
 *
 * @example
 * const json = JSON.parse(await Bun.file("model/scheduler/scheduler_config.json").text());
 * const { plugin, config } = schedulerFromDiffusersConfig(json, { scheduler: "euler" });
 * const instance = plugin.create(config);          // SchedulerInstance
 * const s = instance.createScheduler();            // one per generation
 * s.setTimesteps(30);
 */
import type { SchedulerInstance } from "../../core/plugin.ts";
import { unknownPluginMessage } from "../../core/registry.ts";
import type { SchedulerPlugin } from "./base.ts";
import { SchedulerConfigError, type ResolvedSchedulerConfig } from "./config.ts";
import ddim from "./ddim.ts";
import ddpm from "./ddpm.ts";
import dpmpp2m from "./dpmpp-2m.ts";
import eulerAncestral from "./euler-ancestral.ts";
import euler from "./euler.ts";
import heun from "./heun.ts";
import lcm from "./lcm.ts";
import pndm from "./pndm.ts";
import unipc from "./unipc.ts";

/** Every scheduler plugin definition, for the plugin registry. */
export const schedulerPlugins: readonly SchedulerPlugin[] = Object.freeze([
  ddpm,
  ddim,
  pndm,
  euler,
  eulerAncestral,
  heun,
  dpmpp2m,
  lcm,
  unipc,
]);

/** diffusers class name → diffgraph scheduler name. */
export const DIFFUSERS_CLASS_TO_SCHEDULER: Readonly<Record<string, string>> = Object.freeze({
  DDPMScheduler: "ddpm",
  DDIMScheduler: "ddim",
  PNDMScheduler: "pndm",
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler-ancestral",
  HeunDiscreteScheduler: "heun",
  DPMSolverMultistepScheduler: "dpmpp-2m",
  LCMScheduler: "lcm",
  UniPCMultistepScheduler: "unipc",
});

const byName = new Map(schedulerPlugins.map((p) => [p.name, p]));

export function schedulerNames(): string[] {
  return [...byName.keys()];
}

/** The plugin for a scheduler name; the error lists the names there are. */
export function getSchedulerPlugin(name: string): SchedulerPlugin {
  const plugin = byName.get(name);
  if (!plugin) {
    throw new SchedulerConfigError("scheduler", `scheduler: ${unknownPluginMessage("scheduler", name, schedulerNames())}`);
  }
  return plugin;
}

/** The scheduler name for a diffusers class name (`"EulerDiscreteScheduler"` → `"euler"`). */
export function schedulerNameForClass(className: string): string {
  const name = DIFFUSERS_CLASS_TO_SCHEDULER[className];
  if (!name) {
    throw new SchedulerConfigError(
      "_class_name",
      `_class_name: diffusers scheduler class "${className}" has no diffgraph equivalent (supported: ${Object.keys(DIFFUSERS_CLASS_TO_SCHEDULER).join(", ")})`,
    );
  }
  return name;
}

export interface FromDiffusersOptions {
  /** Use this scheduler instead of the config's `_class_name` (the config is reused, as `from_config`). */
  readonly scheduler?: string;
  /** Keys to set over the config (e.g. `{ timestep_spacing: "trailing" }`). */
  readonly overrides?: Record<string, unknown>;
}

/**
 * Pick the plugin for a `scheduler_config.json` object and resolve the config under that plugin's
 * defaults. Keys meant for other schedulers are kept and ignored; unknown keys throw, naming the key.
 */
export function schedulerFromDiffusersConfig(
  json: unknown,
  options: FromDiffusersOptions = {},
): { plugin: SchedulerPlugin; config: ResolvedSchedulerConfig } {
  const raw = (json ?? {}) as Record<string, unknown>;
  let name = options.scheduler;
  if (!name) {
    const cls = raw._class_name;
    if (typeof cls !== "string") {
      throw new SchedulerConfigError("_class_name", "_class_name: the config names no diffusers class; pass a scheduler name");
    }
    name = schedulerNameForClass(cls);
  }
  const plugin = getSchedulerPlugin(name);
  return { plugin, config: plugin.resolve({ ...raw, ...options.overrides }) };
}

/** Build a scheduler plugin instance straight from a model folder's `scheduler_config.json` object. */
export function createSchedulerFromDiffusersConfig(json: unknown, options: FromDiffusersOptions = {}): SchedulerInstance {
  const { plugin, config } = schedulerFromDiffusersConfig(json, options);
  return plugin.create(config);
}

export { SchedulerConfigError, type ResolvedSchedulerConfig } from "./config.ts";
export type { SchedulerPlugin } from "./base.ts";
