/**
 * SHA-256 manifests (core/manifest.ts, `bun run manifest`): the committed model folders carry one
 * that matches, a flipped bit in a weight file is an error naming the file when the folder has a
 * manifest (and, without one, draws silently — which is why it exists), and the CLI writes and checks.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileSource } from "../../core/adapters/node.ts";
import { buildManifest, MANIFEST_FILE, manifestMismatch, readManifest, sha256Hex, verifiedSource } from "../../core/manifest.ts";
import { memorySource } from "../../core/model-source.ts";
import { createRng } from "../../core/random.ts";
import { diffgraph } from "../helpers.ts";

const base = mkdtempSync(join(tmpdir(), "dg-manifest-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

function copyTiny(name: string): string {
  const dir = join(base, name);
  cpSync("models/tiny-sd", dir, { recursive: true });
  return dir;
}

/** Flip one bit chosen by `seed` (recorded so a failure replays). */
function flipOneBit(file: string, seed: number): void {
  const bytes = new Uint8Array(readFileSync(file));
  const rng = createRng(seed);
  const at = Math.floor(rng.uniform() * bytes.length);
  bytes[at]! ^= 1 << Math.floor(rng.uniform() * 8);
  writeFileSync(file, bytes);
}

describe("manifests", () => {
  test("sha256Hex is SHA-256 (FIPS 180-2 test vector)", async () => {
    expect(await sha256Hex(new TextEncoder().encode("abc"))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  for (const folder of ["models/tiny-sd", "models/tiny-sd-fp16", "models/emoji-64"]) {
    test(`${folder} has a manifest, and every file it lists matches`, async () => {
      const source = fileSource(folder);
      const manifest = await readManifest(source);
      expect(manifest).toBeDefined();
      for (const f of ["model_index.json", "unet/model.onnx", "text_encoder/model.onnx", "scheduler/scheduler_config.json"]) expect(manifest!.files[f]).toBeDefined();
      for (const f of Object.keys(manifest!.files)) {
        const why = await manifestMismatch(manifest!, f, await source.read(f));
        if (why) throw new Error(`${folder}/${f}: ${why} — run \`bun run manifest ${folder}\` after changing a model file`);
      }
    });
  }

  test("a bit flipped in a weight file: with the manifest an error naming the file, without it a silent run", async () => {
    const seed = 11; // a flip onnxruntime does not notice (checked below)
    const dg = await diffgraph();
    const withManifest = copyTiny("flip-with");
    flipOneBit(join(withManifest, "unet/model.onnx"), seed);
    await expect(dg.openPipeline(withManifest)).rejects.toThrow(`${relative(process.cwd(), withManifest)}/unet/model.onnx: SHA-256`);

    const without = copyTiny("flip-without");
    flipOneBit(join(without, "unet/model.onnx"), seed);
    rmSync(join(without, MANIFEST_FILE));
    const p = await dg.openPipeline(without);
    await p.check(); // nothing else can tell
    await p.dispose();
    await dg.dispose();
  });

  test("a truncated file is reported as truncated, with both sizes", async () => {
    const dir = copyTiny("truncated");
    const file = join(dir, "vae_decoder/model.onnx");
    writeFileSync(file, readFileSync(file).subarray(0, 1000));
    const dg = await diffgraph();
    await expect(dg.openPipeline(dir)).rejects.toThrow(/vae_decoder\/model\.onnx: is 1000 bytes but manifest\.sha256\.json says \d+ \(truncated/);
    await dg.dispose();
  });

  test("files the manifest does not list are read unchecked; listed ones are checked through sub-folders too", async () => {
    const files = { "a.json": "{}", "unet/config.json": '{"sample_size": 8}' };
    const manifest = await buildManifest(Object.entries(files).map(([k, v]) => [k, new TextEncoder().encode(v)] as const));
    const source = verifiedSource(memorySource({ ...files, "extra.txt": "later", "unet/config.json": '{"sample_size": 9}' }), manifest);
    expect(new TextDecoder().decode(await source.read("extra.txt"))).toBe("later");
    expect(new TextDecoder().decode(await source.read("a.json"))).toBe("{}");
    await expect(source.sub("unet").read("config.json")).rejects.toThrow("memory:/unet/config.json: SHA-256");
  });

  test("a malformed manifest is an error naming it", async () => {
    const dir = copyTiny("bad-manifest");
    writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify({ format: "diffgraph-manifest/1", algorithm: "SHA-256", files: { "unet/model.onnx": { size: 1, sha256: "xyz" } } }));
    const dg = await diffgraph();
    await expect(dg.openPipeline(dir)).rejects.toThrow(`${relative(process.cwd(), dir)}/${MANIFEST_FILE}: files.unet/model.onnx.sha256: must be 64 lowercase hex digits`);
    await dg.dispose();
  });

  test("bun run manifest writes a manifest that --check accepts, and --check names a changed file (exit 1)", () => {
    const dir = copyTiny("cli");
    rmSync(join(dir, MANIFEST_FILE));
    const run = (...args: string[]) => Bun.spawnSync([process.execPath, "api/cli/manifest.ts", ...args]);
    const w = run(dir);
    expect(w.exitCode).toBe(0);
    expect(w.stdout.toString()).toContain("9 files");
    const written = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), "utf8"));
    expect(written.files["unet/model.onnx"].size).toBe(readFileSync(join(dir, "unet/model.onnx")).length);
    expect(run("--check", dir).exitCode).toBe(0);
    writeFileSync(join(dir, "scheduler/scheduler_config.json"), "{}");
    const c = run("--check", dir);
    expect(c.exitCode).toBe(1);
    expect(c.stdout.toString()).toContain("scheduler/scheduler_config.json: is 2 bytes but manifest.sha256.json says");
    expect(c.stderr.toString().trim().split("\n")).toEqual(["manifest: 1 file does not match the manifest (listed above)"]);
  });
});
