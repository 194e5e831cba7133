/** The metric plugins (kind "metric"), for the built-in registry. */
import type { PluginDefinition } from "../../core/plugin.ts";
import clipScore from "./clip-score.ts";
import frechetDistance from "./frechet-distance.ts";
import rPrecision from "./r-precision.ts";

export { clipScore, rPrecision, frechetDistance };
export const metricPlugins: readonly PluginDefinition[] = [clipScore, rPrecision, frechetDistance];
