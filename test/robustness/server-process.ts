/**
 * A real `bun api/serve.ts` (or `deno run -A api/serve.ts`) in a child process on a free loopback
 * port, for the robustness suites and the host suites: a crash there is seen as the process exiting
 * (in-process servers would take the test runner down with them, or hide an unhandled rejection).
 * Stop it with `stop()` or kill it with `kill9()`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

export interface ServerProcess {
  readonly url: string;
  readonly proc: Subprocess;
  readonly dataDir: string;
  /** POST a GraphQL operation; the parsed response body. */
  gql<T = any>(query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<{ data?: T; errors?: any[] }>;
  /** Stop it and delete its data folder (unless `keepData`). */
  close(keepData?: boolean): Promise<void>;
  /** stderr so far (the server's log). */
  log(): string;
  alive(): boolean;
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

/** A pipelines folder holding the shipped pipelines `names`, their model folders made absolute. */
export function pipelinesFolder(names: readonly string[]): string {
  const dir = mkdtempSync(join(tmpdir(), "diffgraph-robust-pipelines-"));
  for (const name of names) {
    const doc = JSON.parse(readFileSync(`pipelines/${name}.json`, "utf8"));
    doc.model = resolve("pipelines", doc.model);
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(doc));
  }
  return dir;
}

/** Every server still running is killed when the test process exits, even after a failed test. */
const running = new Set<Subprocess>();
process.on("exit", () => running.forEach((p) => p.kill("SIGKILL")));

const RUNTIME = { bun: ["bun"], deno: [resolve("node_modules/.bin/deno"), "run", "-A"] } as const;

export async function startServerProcess(options: { dataDir?: string; pipelinesDir: string; args?: string[]; env?: Record<string, string>; runtime?: keyof typeof RUNTIME }): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "diffgraph-robust-data-"));
  const proc = Bun.spawn(
    [...RUNTIME[options.runtime ?? "bun"], "api/serve.ts", "--port", "0", "--data", dataDir, "--pipelines", options.pipelinesDir, ...(options.args ?? [])],
    { stdout: "ignore", stderr: "pipe", env: { ...process.env, ...options.env } },
  );
  running.add(proc);
  void proc.exited.then(() => running.delete(proc));
  let log = "";
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${log}`)), 60_000);
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        log += decoder.decode(value);
        const m = /diffgraph API on (http:\/\/[\d.]+:\d+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          resolveUrl(m[1]!);
        }
      }
      clearTimeout(timer);
      reject(new Error(`server exited before listening (code ${proc.exitCode}):\n${log}`));
    })().catch(reject);
  });
  const stop = async () => {
    proc.kill("SIGTERM");
    await proc.exited;
  };
  return {
    url,
    proc,
    dataDir,
    async gql(query, variables, headers = {}) {
      const res = await fetch(`${url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...headers },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    async close(keepData = false) {
      await stop();
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
    log: () => log,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    stop,
    async kill9() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}
