/**
 * Holds plugin definitions by name. Built-ins are registered by `plugins/index.ts`; a pipeline may
 * name a plugin by module path instead (`"use": "./my-plugin.ts"`), loaded with a standard dynamic
 * `import()` relative to the pipeline file, so a user's plugin works without touching diffgraph.
 */
import { PLUGIN_KINDS, type PluginDefinition, type PluginKind } from "./plugin.ts";

export class PluginRegistry {
  private readonly plugins = new Map<string, PluginDefinition>();

  constructor(defs: Iterable<PluginDefinition> = []) {
    for (const d of defs) this.register(d);
  }

  register(def: PluginDefinition): this {
    if (!PLUGIN_KINDS.includes(def.kind)) {
      throw new Error(`plugin "${def.name}" has unknown kind "${def.kind}" (kinds: ${PLUGIN_KINDS.join(", ")})`);
    }
    if (this.plugins.has(def.name)) {
      throw new Error(`a plugin named "${def.name}" is already registered (${this.plugins.get(def.name)!.kind}); plugin names must be unique`);
    }
    this.plugins.set(def.name, def);
    return this;
  }

  get(name: string): PluginDefinition | undefined {
    return this.plugins.get(name);
  }

  list(kind?: PluginKind): PluginDefinition[] {
    return [...this.plugins.values()].filter((p) => !kind || p.kind === kind);
  }

  names(kind?: PluginKind): string[] {
    return this.list(kind).map((p) => p.name);
  }

  /** The plugin `name` of `kind`; otherwise an `UnknownPluginError` listing the names of that kind. */
  require(name: string, kind: PluginKind): PluginDefinition {
    const def = this.plugins.get(name);
    if (!def || def.kind !== kind) throw new UnknownPluginError(kind, name, this.names(kind));
    return def;
  }
}

/** The one wording of "no such plugin", wherever a name is looked up. */
export function unknownPluginMessage(kind: string, name: string, names: readonly string[]): string {
  return `unknown ${kind} "${name}" (${kind}s: ${names.join(", ")})`;
}

export class UnknownPluginError extends Error {
  constructor(kind: string, name: string, names: readonly string[]) {
    super(unknownPluginMessage(kind, name, names));
    this.name = "UnknownPluginError";
  }
}

export function isModulePath(use: string): boolean {
  return /^(\.{1,2}\/|\/|file:|https?:)/.test(use);
}

/** Load a plugin definition from a module (its default export, or a named export `plugin`). */
export async function importPlugin(use: string, baseUrl: string): Promise<PluginDefinition> {
  const url = new URL(use, baseUrl).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot import plugin module ${url}: ${(err as Error).message}`);
  }
  const def = (mod.default ?? mod.plugin) as PluginDefinition | undefined;
  if (!def || typeof def !== "object" || typeof def.create !== "function" || typeof def.name !== "string") {
    throw new Error(`module ${url} does not export a plugin definition (export default definePlugin({...}))`);
  }
  return def;
}
