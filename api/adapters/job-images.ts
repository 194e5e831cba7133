/**
 * A job store's final images, whatever keeps the records (SQLite, Redis): written durably before
 * the caller commits the record, read by id, and swept when no finished record claims them — so a
 * job is finished with all its images or not finished with none. The files come in as `ImageFiles`
 * (`image-files-node.ts`: a folder through node:fs).
 */

/** Durable image files: written so that a crash leaves either the whole file or a removable temporary. */
export interface ImageFiles {
  write(name: string, bytes: Uint8Array): Promise<void>;
  /** Make the renames of `write` durable (fsync of the folder). */
  flush(): Promise<void>;
  read(name: string): Promise<Uint8Array | null>;
  list(): Promise<string[]>;
  remove(name: string): Promise<void>;
}

/** Crash tests' fault point (DIFFGRAPH_FAULT=after-images: SIGKILL between the images and the record). */
export type FaultHook = (point: "after-images") => void;

export class JobImages {
  constructor(
    private readonly files: ImageFiles,
    private readonly fault: FaultHook = () => {},
  ) {}

  /** Image i of job `jobId` is `${jobId}-${i}`; resolves once all are durable. */
  async write(jobId: string, pngs: readonly Uint8Array[]): Promise<void> {
    await Promise.all(pngs.map((png, i) => this.files.write(`${jobId}-${i}.png`, png)));
    await this.files.flush();
    this.fault("after-images");
  }

  read(imageId: string): Promise<Uint8Array | null> {
    return this.files.read(`${imageId}.png`);
  }

  /** Remove every file but the images of `finished` (job id → image count) and temporaries; returns how many. */
  async sweep(finished: Iterable<readonly [id: string, imageCount: number]>): Promise<number> {
    const claimed = new Set<string>();
    for (const [id, n] of finished) for (let i = 0; i < n; i++) claimed.add(`${id}-${i}.png`);
    let removed = 0;
    for (const f of await this.files.list()) {
      if (claimed.has(f)) continue;
      await this.files.remove(f);
      removed++;
    }
    return removed;
  }
}
