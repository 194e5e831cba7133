/**
 * A throwaway Redis for the distributed suites: Debian's `redis-server` on 127.0.0.1, a free port and
 * a temporary folder, AOF on (`--appendonly yes --save ''`), stopped when the test process exits.
 * `.ci/run` installs it, and under CI its absence is a failure, not a skip; on a machine without it the
 * suites that need it are skipped and say so.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

const BIN = process.env.REDIS_SERVER ?? "redis-server";
const probe = Bun.spawnSync(["sh", "-c", `command -v ${BIN}`], { stdout: "ignore", stderr: "ignore" });
export const HAS_REDIS = probe.exitCode === 0 || !!process.env.CI;
if (!HAS_REDIS) console.warn(`${BIN} missing: the Redis (distributed mode) tests are skipped (apt-get install redis-server)`);

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  /** kill -9 the server (AOF keeps what it acknowledged). */
  kill9(): Promise<void>;
  /** Start it again on the same port and folder (replays the AOF). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const running = new Set<Subprocess>();
process.on("exit", () => running.forEach((p) => p.kill("SIGKILL")));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function ping(port: number): Promise<boolean> {
  try {
    const r = Bun.spawnSync(["redis-cli", "-p", String(port), "ping"], { stdout: "pipe", stderr: "ignore" });
    return r.stdout.toString().trim() === "PONG";
  } catch {
    return false;
  }
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "diffgraph-redis-"));
  let proc: Subprocess;
  const launch = async () => {
    proc = Bun.spawn([BIN, "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", "", "--protected-mode", "no"], { stdout: "ignore", stderr: "pipe" });
    running.add(proc);
    void proc.exited.then(() => running.delete(proc));
    for (let i = 0; i < 100; i++) {
      if (await ping(port)) return;
      if (proc.exitCode !== null) throw new Error(`redis-server exited with code ${proc.exitCode} (port ${port}, dir ${dir})`);
      await Bun.sleep(50);
    }
    throw new Error(`redis-server did not answer PING on port ${port} within 5 s`);
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    async kill9() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
    restart: launch,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
