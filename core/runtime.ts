/**
 * Detects the host runtime and loads its adapter. Only this file knows the adapters exist; the rest
 * of the core receives a `ModelSource` and `OnnxBackends`.
 */
import type { ModelSource } from "./model-source.ts";
import type { OnnxBackends } from "./onnx.ts";

export type Host = "bun" | "node" | "deno" | "browser";

export interface RuntimeAdapter {
  readonly host: Host;
  fileSource(dir: string): ModelSource;
  readonly onnxBackends: OnnxBackends;
}

export function detectHost(): Host {
  const g = globalThis as Record<string, unknown>;
  if ("Bun" in g) return "bun";
  if ("Deno" in g) return "deno";
  if ((g.process as { versions?: { node?: string } } | undefined)?.versions?.node) return "node";
  return "browser";
}

export async function loadRuntimeAdapter(host: Host = detectHost()): Promise<RuntimeAdapter> {
  switch (host) {
    case "bun":
    case "node": {
      const m = await import("./adapters/node.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
    case "deno": {
      const m = await import("./adapters/deno.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
    case "browser": {
      const m = await import("./adapters/browser.ts");
      return { host, fileSource: m.fileSource, onnxBackends: m.onnxBackends };
    }
  }
}
