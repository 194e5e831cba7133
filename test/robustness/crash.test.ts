/**
 * kill -9 of a real server process, mid-job and between writing a job's images and committing its
 * record, then a restart on the same data folder: every job ever accepted is still listed, every
 * SUCCEEDED job has all its images, and no image exists without a SUCCEEDED job (nothing half-done).
 * The kill times come from a seeded RNG (CRASH_SEED replays them).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRng } from "../../core/random.ts";
import { pipelinesFolder, startServerProcess, type ServerProcess } from "./server-process.ts";

const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`crash seed ${SEED} (replay: CRASH_SEED=${SEED})`);
const pipelines = pipelinesFolder(["tiny-sd"]);
const dirs: string[] = [pipelines];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function gql(s: ServerProcess, query: string, variables?: unknown): Promise<any> {
  const res = await fetch(`${s.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query, variables }) });
  return res.json();
}

async function allJobs(s: ServerProcess): Promise<{ id: string; status: string; errorCode: string | null; images: { id: string }[] }[]> {
  const out = [];
  let after: string | null = null;
  for (;;) {
    const r: any = await gql(s, "query($after: String) { jobs(first: 100, after: $after) { edges { node { id status errorCode images { id } } } pageInfo { hasNextPage endCursor } } }", { after });
    out.push(...r.data.jobs.edges.map((e: any) => e.node));
    if (!r.data.jobs.pageInfo.hasNextPage) return out;
    after = r.data.jobs.pageInfo.endCursor;
  }
}

/** The invariants after a restart; returns how many jobs had finished. */
async function check(s: ServerProcess, submitted: ReadonlySet<string>): Promise<number> {
  const jobs = await allJobs(s);
  const byId = new Map(jobs.map((j) => [j.id, j]));
  for (const id of submitted) expect(byId.has(id)).toBe(true); // no accepted job is lost
  const files = new Set(readdirSync(join(s.dataDir, "images")));
  let succeeded = 0;
  for (const j of jobs) {
    expect(["SUCCEEDED", "FAILED", "CANCELLED", "QUEUED", "RUNNING"]).toContain(j.status);
    if (j.status === "SUCCEEDED") {
      succeeded++;
      expect(j.images.length).toBeGreaterThan(0);
      for (const img of j.images) {
        expect(files.has(`${img.id}.png`)).toBe(true);
        const png = readFileSync(join(s.dataDir, "images", `${img.id}.png`));
        expect([...png.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
        files.delete(`${img.id}.png`);
      }
    } else if (j.status === "FAILED") expect(j.errorCode).toBe("INTERRUPTED");
  }
  expect([...files]).toEqual([]); // no image without a finished job, no temporary file
  return succeeded;
}

describe("kill -9 and restart", () => {
  test("between writing images and committing the record: the job is FAILED (INTERRUPTED) and its images are gone", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "diffgraph-crash-"));
    dirs.push(dataDir);
    const s = await startServerProcess({ dataDir, pipelinesDir: pipelines, env: { DIFFGRAPH_FAULT: "after-images" } });
    const g = await gql(s, 'mutation { generate(input: {prompt: "crash", steps: 2, batchSize: 2, scheduler: "ddim"}) { id } }');
    const id = g.data.generate.id;
    await s.proc.exited; // the fault point kills it with SIGKILL once both PNGs are on disk
    expect(s.proc.signalCode).toBe("SIGKILL");
    expect(readdirSync(join(dataDir, "images")).sort()).toEqual([`${id}-0.png`, `${id}-1.png`]);
    const again = await startServerProcess({ dataDir, pipelinesDir: pipelines });
    try {
      const j = (await gql(again, `{ job(id: "${id}") { status errorCode images { id } } }`)).data.job;
      expect(j).toEqual({ status: "FAILED", errorCode: "INTERRUPTED", images: [] });
      expect(existsSync(join(dataDir, "images", `${id}-0.png`))).toBe(false);
      expect(again.log()).toContain("removed 2 image file(s)");
    } finally {
      await again.stop();
    }
  }, 120_000);

  test("rounds of kill -9 at seeded random moments of a busy queue lose no job and leave nothing half-written", async () => {
    const rng = createRng(SEED);
    const dataDir = mkdtempSync(join(tmpdir(), "diffgraph-crash-"));
    dirs.push(dataDir);
    const submitted = new Set<string>();
    const rounds = 6;
    let kills = 0;
    let finished = 0;
    for (let round = 0; round < rounds; round++) {
      const s = await startServerProcess({ dataDir, pipelinesDir: pipelines, args: ["--concurrency", "2"] });
      finished = await check(s, submitted);
      for (let k = 0; k < 4; k++) {
        const steps = 1 + Math.floor(rng.uniform() * 30);
        const g = await gql(s, `mutation { generate(input: {prompt: "round ${round} job ${k}", steps: ${steps}, batchSize: ${1 + (k % 2)}, scheduler: "ddim"}) { id } }`);
        submitted.add(g.data.generate.id);
      }
      await new Promise((r) => setTimeout(r, Math.floor(rng.uniform() * 400)));
      await s.kill9();
      kills++;
    }
    const last = await startServerProcess({ dataDir, pipelinesDir: pipelines });
    try {
      finished = await check(last, submitted);
    } finally {
      await last.stop();
    }
    console.log(`crash rounds: ${kills} kills, ${submitted.size} jobs accepted, ${finished} finished with all images, 0 lost`);
    expect(submitted.size).toBe(rounds * 4);
  }, 240_000);
});
