/** Image files for the CLIs: read one (PNG, JPEG, WebP…) from disk as a [1, 3, H, W] tensor, resized (cover). */
import { readFile } from "node:fs/promises";
import type { Tensor } from "../../core/tensor.ts";
import { imageToTensor } from "../image.ts";

export async function readImage(path: string, width: number, height: number): Promise<Tensor> {
  return imageToTensor(new Uint8Array(await readFile(path)), { width, height });
}
