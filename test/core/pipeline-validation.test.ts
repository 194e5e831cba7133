import { describe, expect, test } from "bun:test";
import { PipelineConfigError } from "../../core/pipeline-config.ts";
import { loadTiny, tinyDoc } from "../helpers.ts";

async function rejects(edit: (d: Record<string, any>) => void, path: string, message: RegExp) {
  const doc = tinyDoc();
  edit(doc);
  const err = await loadTiny(doc).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PipelineConfigError);
  expect((err as PipelineConfigError).path).toBe(path);
  expect((err as Error).message).toMatch(message);
}

describe("pipeline validation names the node and field at fault", () => {
  test("unknown plugin, with a suggestion", () =>
    rejects((d) => (d.nodes.decode.use = "vae-decodr"), "nodes.decode.use", /unknown plugin "vae-decodr".*Did you mean "vae-decoder"/));

  test("unknown scheduler inside the denoise node", () =>
    rejects((d) => (d.nodes.denoise.config.scheduler.use = "ddimm"), "nodes.denoise.config.scheduler.use", /unknown plugin "ddimm"/));

  test("a decoder where a scheduler is needed", () =>
    rejects((d) => (d.nodes.denoise.config.scheduler.use = "vae-decoder"), "nodes.denoise.config.scheduler.use", /is a decoder plugin, but a scheduler is needed/));

  test("a scheduler used as a node", () =>
    rejects((d) => (d.nodes.extra = { use: "ddim", inputs: {} }), "nodes.extra.use", /scheduler plugin; it is a component of a denoise node/));

  test("wrong config type", () =>
    rejects((d) => (d.nodes.decode.config = { maxBatch: "eight" }), "nodes.decode.config", /maxBatch: .*number/i));

  test("unknown config key", () =>
    rejects((d) => (d.nodes.prompt.config = { modle: "x.onnx" }), "nodes.prompt.config", /modle/));

  test("config value out of range", () =>
    rejects((d) => (d.nodes.decode.config = { maxBatch: 0 }), "nodes.decode.config", /maxBatch/));

  test("component config out of range names the component key", () =>
    rejects((d) => (d.nodes.denoise.config.scheduler.config = { beta_end: -1 }), "nodes.denoise.config.scheduler.config", /beta_end/));

  test("missing required input", () =>
    rejects((d) => delete d.nodes.denoise.inputs.cond, "nodes.denoise.inputs.cond", /missing: denoise needs input "cond" \(embeddings\)/));

  test("input wired to an output of another type", () =>
    rejects((d) => (d.nodes.decode.inputs.latents = "prompt.embeddings"), "nodes.decode.inputs.latents", /is embeddings, but input "latents" of vae-decoder takes latents/));

  test("reference to a node that does not exist", () =>
    rejects((d) => (d.nodes.decode.inputs.latents = "denoize.latents"), "nodes.decode.inputs.latents", /node "denoize", which does not exist.*"denoise"/));

  test("reference to an output that does not exist", () =>
    rejects((d) => (d.nodes.decode.inputs.latents = "denoise.images"), "nodes.decode.inputs.latents", /has no output "images"/));

  test("unknown run input", () =>
    rejects((d) => (d.nodes.prompt.inputs.text = "$promt"), "nodes.prompt.inputs.text", /unknown run input "\$promt"/));

  test("a cycle, shown as a loop", () =>
    rejects(
      (d) => {
        d.nodes.reencode = { use: "vae-encoder", inputs: { images: "decode.images" } };
        d.nodes.denoise.inputs.init = "reencode.latents";
      },
      "nodes.denoise.inputs",
      /cycle: denoise → decode → reencode → denoise/,
    ));

  test("unknown top-level key and bad output", async () => {
    await rejects((d) => (d.nodez = {}), "(root)", /nodez/);
    await rejects((d) => (d.output = "prompt.embeddings"), "output", /must be an images output/);
  });

  test("configFile that does not exist names the file", () =>
    rejects((d) => (d.nodes.denoise.config.scheduler.configFile = "scheduler/nope.json"), "nodes.denoise.config.scheduler.configFile", /nope\.json: file not found/));
});
