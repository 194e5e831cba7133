/**
 * The distributed mode's engines on one Redis, for hosts with `node:fs` (Bun, Deno, Node): job
 * records in Redis (`redis-store.ts`), the queue on BullMQ (`redis-queue-bullmq.ts`), events on
 * Redis pub/sub (`redis-bus.ts`), and final images as files under `<dataDir>/images`, a folder
 * every node must mount (the same path on each).
 */
import { join } from "node:path";
import { Redis } from "ioredis";
import type { EventBus, JobQueue, JobStore } from "../ports.ts";
import { envFaultHook, imageFiles } from "./image-files-node.ts";
import { RedisEventBus } from "./redis-bus.ts";
import { BullJobQueue, redisConnection } from "./redis-queue-bullmq.ts";
import { RedisJobStore } from "./redis-store.ts";

export interface RedisEnginesOptions {
  /** Shared folder for final images (`<dataDir>/images`). */
  readonly dataDir: string;
  readonly maxQueue?: number;
  /** Jobs this process runs at once (workers). */
  readonly concurrency?: number;
  readonly lockMs?: number;
  readonly subscriberBuffer?: number;
  /** Namespace of every key (default "diffgraph"). */
  readonly prefix?: string;
  readonly log?: (message: string) => void;
}

export function openRedisEngines(url: string, o: RedisEnginesOptions): { store: JobStore; queue: JobQueue; bus: EventBus } {
  const connection = redisConnection(url);
  const log = o.log ?? (() => {});
  const prefix = o.prefix ?? "diffgraph";
  const conn = (role: string) => {
    const r = new Redis(connection);
    // ioredis reconnects by itself; say so once per outage instead of throwing.
    let down = false;
    r.on("error", (err) => {
      if (!down) log(`redis (${role}): ${err.message}; reconnecting`);
      down = true;
    });
    r.on("ready", () => {
      if (down) log(`redis (${role}): reconnected`);
      down = false;
    });
    return r;
  };
  return {
    store: new RedisJobStore(conn("store"), imageFiles(join(o.dataDir, "images")), prefix, envFaultHook()),
    queue: new BullJobQueue({ connection, prefix: `${prefix}:bull`, maxLength: o.maxQueue, concurrency: o.concurrency, lockMs: o.lockMs, log }),
    bus: new RedisEventBus(conn("bus"), conn("bus subscriber"), { prefix, subscriberBuffer: o.subscriberBuffer, log }),
  };
}
