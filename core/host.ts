/**
 * Which runtime this is, from its globals alone (no adapter imports, so a web or worker bundle can
 * ask without pulling in any adapter), and the shape every runtime adapter has.
 */
import type { ModelSource } from "./model-source.ts";
import type { OnnxBackends } from "./onnx.ts";

export type Host = "bun" | "node" | "deno" | "browser";

/** What an adapter hands the core: file access for model folders and the ONNX backends. */
export interface RuntimeAdapter {
  readonly host: Host;
  fileSource(dir: string): ModelSource;
  readonly onnxBackends: OnnxBackends;
}

export function detectHost(): Host {
  const g = globalThis as Record<string, unknown>;
  if ("Bun" in g) return "bun";
  if ("Deno" in g) return "deno";
  // workerd (Cloudflare Workers) sets process.versions.node under nodejs_compat but has no Node
  // file system or native modules: it is a web host. Its navigator says so.
  if ((g.navigator as { userAgent?: string } | undefined)?.userAgent === "Cloudflare-Workers") return "browser";
  if ((g.process as { versions?: { node?: string } } | undefined)?.versions?.node) return "node";
  return "browser";
}
