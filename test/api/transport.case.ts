/**
 * One contract for every subscription transport and host: `runTransportSuite(makeTransport, start)`
 * is run by sse.test.ts and ws.test.ts against a Bun-hosted server on a loopback port, and by
 * hosts.test.ts against a Deno-hosted one in a child process.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { fetchPng, GENERATE, pngSize, PROGRESS, startTestServer, type SuiteServer, type Transport } from "./helpers.ts";

export function runTransportSuite(makeTransport: () => Transport, start: (options: { concurrency: number }) => Promise<SuiteServer> = startTestServer): void {
  let server: SuiteServer;
  let transport: Transport;
  beforeAll(async () => {
    server = await start({ concurrency: 2 });
    transport = makeTransport();
  }, 120_000);
  afterAll(async () => {
    transport.dispose();
    await server.close();
  });

  const generate = async (input: Record<string, unknown>) => {
    const r = await server.gql(GENERATE, { input: { prompt: "a red circle", scheduler: "ddim", ...input } });
    expect(r.errors).toBeUndefined();
    return r.data.generate.id as string;
  };

  /** Run `body` while both slots are taken by long jobs, so jobs submitted inside stay queued until it releases them. */
  const withSlotsBusy = async <T>(body: (release: () => Promise<void>) => Promise<T>): Promise<T> => {
    const blockers = [await generate({ steps: 500 }), await generate({ steps: 500 })];
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      for (const b of blockers) await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: b });
    };
    try {
      return await body(release);
    } finally {
      await release();
    }
  };

  test("generate → subscribe → exactly `steps` frames in order, then the final image", async () => {
    const steps = 4;
    const { id, events } = await withSlotsBusy(async (release) => {
      const id = await generate({ steps, seed: 7 });
      const events = await transport.subscribe(server, PROGRESS, { id }, (d) => (d.jobProgress.__typename === "JobSnapshot" ? release() : undefined));
      return { id, events };
    });
    expect(events[0].jobProgress.__typename).toBe("JobSnapshot");
    expect(events[0].jobProgress.job.status).toBe("QUEUED");
    expect(events.map((e) => e.jobProgress.__typename)).toEqual(["JobSnapshot", ...Array(steps).fill("JobStep"), "JobFinished"]);
    const stepEvents = events.slice(1, -1).map((e) => e.jobProgress);
    expect(stepEvents.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    for (const s of stepEvents) {
      expect(s.jobId).toBe(id);
      expect(s.totalSteps).toBe(steps);
      expect(s.dropped).toBe(0);
      expect(s.elapsedMs).toBeGreaterThan(0);
      expect(s.previews).toHaveLength(1);
      expect(s.previews[0].dataUrl).toStartWith("data:image/png;base64,");
      expect(s.previews[0].url).toBe(`/images/${id}-s${s.step}-0.png`);
    }
    const timesteps = stepEvents.map((s) => s.timestep);
    expect([...timesteps].sort((a, b) => b - a)).toEqual(timesteps);
    const final = events.at(-1).jobProgress.job;
    expect(final.status).toBe("SUCCEEDED");
    expect(final.step).toBe(steps);
    expect(final.images).toHaveLength(1);
    const png = await fetchPng(server.url + final.images[0].url);
    expect(png.status).toBe(200);
    expect(pngSize(png.bytes)).toEqual({ width: 64, height: 64 });
    const frame = await fetchPng(server.url + stepEvents.at(-1).previews[0].url);
    expect(frame.status).toBe(200);
    expect(pngSize(frame.bytes)).toEqual({ width: 64, height: 64 });
  });

  test("a batch job sends one preview per image per step", async () => {
    const id = await withSlotsBusy(async (release) => {
      const id = await generate({ steps: 5, batchSize: 2 });
      await release();
      return id;
    });
    const events = await transport.subscribe(server, PROGRESS, { id });
    const stepEvents = events.filter((e) => e.jobProgress.__typename === "JobStep").map((e) => e.jobProgress);
    expect(stepEvents.every((s) => s.previews.length === 2 && s.totalSteps === 5)).toBe(true);
    expect(stepEvents.map((s) => s.step)).toEqual([1, 2, 3, 4, 5].slice(5 - stepEvents.length));
    const final = events.at(-1).jobProgress.job;
    expect(final.status).toBe("SUCCEEDED");
    expect(final.images.map((i: { id: string }) => i.id)).toEqual([`${id}-0`, `${id}-1`]);
  });

  test("cancellation mid-run stops the job at the next step and frees its slot", async () => {
    const id = await generate({ steps: 500, height: 128, width: 128 });
    let cancelledAt = 0;
    const events = await transport.subscribe(server, PROGRESS, { id }, async (d) => {
      const e = d.jobProgress;
      if (e.__typename === "JobStep" && e.step >= 3 && !cancelledAt) {
        cancelledAt = e.step;
        const r = await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id status } }`, { id });
        expect(r.errors).toBeUndefined();
        expect(r.data.cancelJob.id).toBe(id);
      }
    });
    const final = events.at(-1).jobProgress.job;
    expect(final.status).toBe("CANCELLED");
    expect(final.error).toContain("cancelled");
    expect(final.step).toBeGreaterThanOrEqual(3);
    expect(final.step).toBeLessThan(500);
    expect(final.images).toEqual([]);
    // The slot is free: a new job runs to completion.
    const next = await generate({ steps: 2 });
    const after = await transport.subscribe(server, PROGRESS, { id: next });
    expect(after.at(-1).jobProgress.job.status).toBe("SUCCEEDED");
  });

  test("a late subscriber gets the current state first", async () => {
    const id = await generate({ steps: 500, height: 128, width: 128 });
    let snapshot: any;
    await transport.subscribe(server, PROGRESS, { id }, async (d) => {
      if (d.jobProgress.__typename === "JobStep" && d.jobProgress.step >= 5 && !snapshot) {
        // A second client joins mid-run and leaves after its first event.
        const late = await transport.subscribe(server, `subscription($id: ID!) { jobProgress(id: $id) { __typename ... on JobSnapshot { job { status step } lastStep { step previews { url } } } } }`, { id }, async (e) => {
          snapshot ??= e.jobProgress;
          await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id });
        });
        expect(late.length).toBeGreaterThanOrEqual(1);
      }
    });
    expect(snapshot.__typename).toBe("JobSnapshot");
    expect(snapshot.job.status).toBe("RUNNING");
    expect(snapshot.lastStep.step).toBeGreaterThanOrEqual(4);
    expect(snapshot.lastStep.previews).toHaveLength(1);
    // After the job finished, a subscriber gets only the final event.
    const done = await transport.subscribe(server, PROGRESS, { id });
    expect(done.map((e) => e.jobProgress.__typename)).toEqual(["JobFinished"]);
  });

  test("20 concurrent clients each get their own frames and final image", async () => {
    const steps = 3;
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, k) => {
        const id = await generate({ steps, seed: 100 + k, prompt: `client ${k}` });
        const events = await transport.subscribe(server, PROGRESS, { id });
        return { id, events };
      }),
    );
    const finals = new Set<string>();
    for (const { id, events } of results) {
      const stepEvents = events.filter((e) => e.jobProgress.__typename === "JobStep").map((e) => e.jobProgress);
      expect(stepEvents.every((s) => s.jobId === id)).toBe(true);
      // Subscribed before the job could start (20 jobs, 2 slots) except for the first few.
      if (events[0].jobProgress.__typename === "JobSnapshot" && events[0].jobProgress.job.status === "QUEUED") {
        expect(stepEvents.map((s) => s.step)).toEqual([1, 2, 3]);
      }
      const final = events.at(-1).jobProgress.job;
      expect(final.id).toBe(id);
      expect(final.status).toBe("SUCCEEDED");
      expect(final.images[0].id).toBe(`${id}-0`);
      const png = await fetchPng(server.url + final.images[0].url);
      expect(png.status).toBe(200);
      finals.add(Buffer.from(png.bytes).toString("base64"));
    }
    expect(finals.size).toBe(20); // different seeds ⇒ different images
  });
}
