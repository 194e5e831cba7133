/**
 * The source image with the region to repaint blanked out, for inpainting UNets' masked-image
 * latents: where the mask is ≥ 0.5 the pixel becomes mid-grey (0.5, i.e. 0 in the VAE's [−1, 1]
 * range), as diffusers' `image * (mask < 0.5)` does on [−1, 1] images. The mask is [1|B, 1|3, H, W]
 * at the image's size, 1 = repaint (an RGB mask counts by its channels' mean).
 */
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";

export default definePlugin({
  name: "masked-image",
  kind: "decoder",
  description: "Image with the masked region blanked (mid-grey), for inpainting UNets' masked-image latents",
  configSchema: z.object({}).strict(),
  inputs: { images: "images", mask: "images" },
  outputs: { images: "images" },
  deterministic: true,
  create() {
    return {
      async run({ images, mask }) {
        const [B, C, H, W] = images.dims as [number, number, number, number];
        const [mb, mc, mh, mw] = mask.dims as [number, number, number, number];
        if (mask.dims.length !== 4 || mh !== H || mw !== W || (mc !== 1 && mc !== 3) || (mb !== 1 && mb !== B)) {
          throw new RangeError(`mask: must be [1, 1 or 3, ${H}, ${W}] to match the image, got [${mask.dims.join(",")}]`);
        }
        const plane = H * W;
        const out = new Float32Array(images.data.length);
        for (let b = 0; b < B; b++)
          for (let c = 0; c < C; c++)
            for (let p = 0; p < plane; p++) {
              const i = (b * C + c) * plane + p;
              let v = 0;
              for (let k = 0; k < mc; k++) v += mask.data[((mb === 1 ? 0 : b) * mc + k) * plane + p]!;
              out[i] = v / mc >= 0.5 ? 0.5 : images.data[i]!;
            }
        return { images: { dims: images.dims, data: out } };
      },
    };
  },
});
