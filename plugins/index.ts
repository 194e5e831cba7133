/** The built-in plugins, registered in one registry. */
import { PluginRegistry } from "../core/registry.ts";
import type { PluginDefinition } from "../core/plugin.ts";
import clipText from "./encoders/clip-text.ts";
import vaeEncoder from "./encoders/vae-encoder.ts";
import onnxUnet from "./noise-predictors/onnx-unet.ts";
import vaeDecoder from "./decoders/vae-decoder.ts";
import latentPreview from "./decoders/latent-preview.ts";
import upscale from "./decoders/upscale.ts";
import maskedImage from "./decoders/masked-image.ts";
import { schedulerPlugins } from "./schedulers/index.ts";
import { metricPlugins } from "./metrics/index.ts";

export const builtinPlugins: readonly PluginDefinition[] = [clipText, vaeEncoder, onnxUnet, vaeDecoder, latentPreview, upscale, maskedImage, ...schedulerPlugins, ...metricPlugins];

export function builtinRegistry(): PluginRegistry {
  return new PluginRegistry(builtinPlugins);
}
