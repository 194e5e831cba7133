/**
 * Which runtime this is, from its globals alone (no imports, so a web or worker bundle can ask
 * without pulling in any adapter).
 */
export type Host = "bun" | "node" | "deno" | "browser";

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
