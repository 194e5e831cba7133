/**
 * Hard retrieval: top-1 caption retrieval among a whole caption pool (for the emoji model, all ~1,715
 * training base-emoji captions) under the evaluation CLIP — far harder than R-precision's 100
 * candidates, so it sees gaps R-precision does not.
 *
 * An image with caption c is a hit iff c is in the pool and its cosine with the image (both
 * embeddings L2-normalised) is strictly higher than that of every other pool caption; a tie counts
 * against c, as in R-precision (`promptRank`), so captions the text tower cannot tell apart are never
 * retrieved. Captions compare by exact string equality. An image whose caption is not in the pool is
 * left out of the measure and counted (`excluded`). The numpy reference of the same definition is
 * models/recipes/caption_pool.py.
 */
import type { Tensor } from "../../core/tensor.ts";
import { rowCosine } from "./clip-eval.ts";

export interface RetrievalPool {
  /** Distinct captions, in the pool file's order. */
  readonly captions: readonly string[];
  /** Text features [P, E] of `captions` (any norm: cosines normalise). */
  readonly features: Tensor;
  readonly index: ReadonlyMap<string, number>;
}

/** The pool from its captions (duplicates dropped, first kept) and a text embedder. */
export async function retrievalPool(captions: readonly string[], embed: (texts: readonly string[]) => Promise<Tensor>): Promise<RetrievalPool> {
  const distinct = [...new Set(captions)];
  if (distinct.length === 0) throw new Error("the retrieval pool is empty");
  const features = await embed(distinct);
  return { captions: distinct, features, index: new Map(distinct.map((c, k) => [c, k])) };
}

/** Whether pool caption `target` is strictly the best match of image `i` among all pool captions. */
export function retrievedTop1(imageFeatures: Tensor, i: number, pool: Pick<RetrievalPool, "features">, target: number): boolean {
  const t = rowCosine(imageFeatures, pool.features, i, target);
  const p = pool.features.dims[0]!;
  for (let k = 0; k < p; k++) if (k !== target && rowCosine(imageFeatures, pool.features, i, k) >= t) return false;
  return true;
}

/** Hits, images measured and images left out (caption not in the pool), accumulated over batches. */
export class RetrievalTally {
  hits = 0;
  measured = 0;
  excluded = 0;
  /** One character per image, in the order added: "1" retrieved, "0" not, "-" left out (caption not in the pool). */
  outcomes = "";
  constructor(readonly pool: RetrievalPool) {}

  /** Add a batch: image features [B, E] and one caption per image. */
  add(imageFeatures: Tensor, captions: readonly string[]): void {
    if (captions.length !== imageFeatures.dims[0]) throw new RangeError(`hard retrieval: ${captions.length} captions for ${imageFeatures.dims[0]} images`);
    for (const [i, c] of captions.entries()) {
      const target = this.pool.index.get(c);
      if (target === undefined) {
        this.excluded++;
        this.outcomes += "-";
        continue;
      }
      this.measured++;
      const hit = retrievedTop1(imageFeatures, i, this.pool, target);
      if (hit) this.hits++;
      this.outcomes += hit ? "1" : "0";
    }
  }

  /** Fraction of measured images retrieved at top-1; null when none was measured. */
  get rate(): number | null {
    return this.measured > 0 ? this.hits / this.measured : null;
  }
}
