/**
 * Optional SHA-256 manifests for model folders. `manifest.sha256.json` lists every file of the
 * folder with its size and digest (written by `bun run manifest DIR`); when a folder has one, each
 * file read through `openModelFolder` is checked against it before it is used, so a flipped bit in
 * a weight file is an error naming that file rather than an image of noise. Files the manifest does
 * not list (added later) are read unchecked.
 *
 * The check costs one SHA-256 over bytes that are read anyway (Web Crypto, no extra I/O): files a
 * pipeline never reads are never hashed.
 */
import { z } from "zod";
import { issuesLine, joinPath, ModelFileError, normalizePath, oneLine, stampSize, type ModelSource } from "./model-source.ts";

export const MANIFEST_FILE = "manifest.sha256.json";
export const MANIFEST_FORMAT = "diffgraph-manifest/1";

/** A SHA-256 as this project writes it: 64 lowercase hex digits. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;

const Entry = z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(SHA256_HEX, "must be 64 lowercase hex digits") }).strict();

export const ManifestSchema = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    algorithm: z.literal("SHA-256"),
    files: z.record(z.string().min(1), Entry),
  })
  .strict();
export type Manifest = z.output<typeof ManifestSchema>;

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}

/** A manifest for files given as (path relative to the folder, bytes); paths sorted, the manifest itself left out. */
export async function buildManifest(files: Iterable<readonly [string, Uint8Array]>): Promise<Manifest> {
  const entries: [string, { size: number; sha256: string }][] = [];
  for (const [path, bytes] of files) {
    const key = normalizePath(path);
    if (key === MANIFEST_FILE) continue;
    entries.push([key, { size: bytes.length, sha256: await sha256Hex(bytes) }]);
  }
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { format: MANIFEST_FORMAT, algorithm: "SHA-256", files: Object.fromEntries(entries) };
}

/** Read and check `manifest.sha256.json` at the root of `source`; undefined when the folder has none. */
export async function readManifest(source: ModelSource): Promise<Manifest | undefined> {
  if (!(await source.exists(MANIFEST_FILE))) return undefined;
  const file = `${source.root}/${MANIFEST_FILE}`;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await source.read(MANIFEST_FILE)));
  } catch (err) {
    throw new ModelFileError(file, `is not valid JSON (${oneLine((err as Error).message)})`);
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success) throw new ModelFileError(file, issuesLine(r.error));
  for (const key of Object.keys(r.data.files)) {
    if (normalizePath(key) !== key) throw new ModelFileError(file, `files: "${key}" is not a normalised path inside the folder`);
  }
  return r.data;
}

/**
 * Why `bytes` (read from `path`) does not match its manifest entry, or null when it does. A file the
 * manifest does not list is not checked (null): it was added after the manifest, which says nothing
 * about it; `bun run manifest --check` reports such files.
 */
export async function manifestMismatch(manifest: Manifest, path: string, bytes: Uint8Array): Promise<string | null> {
  const entry = manifest.files[path];
  if (!entry) return null;
  const regenerate = `regenerate it with \`bun run manifest <folder>\` if the change is intended`;
  if (entry.size !== bytes.length) {
    return `is ${bytes.length} bytes but ${MANIFEST_FILE} says ${entry.size} (${bytes.length < entry.size ? "truncated" : "changed"}; ${regenerate})`;
  }
  const got = await sha256Hex(bytes);
  if (got !== entry.sha256) {
    return `SHA-256 ${got.slice(0, 12)}… does not match ${entry.sha256.slice(0, 12)}… in ${MANIFEST_FILE}: the file is corrupted or was changed (${regenerate})`;
  }
  return null;
}

/** `source` with every read checked against `manifest` (paths relative to the manifest's folder). */
export function verifiedSource(source: ModelSource, manifest: Manifest, prefix = ""): ModelSource {
  return {
    root: source.root,
    async read(path) {
      const key = normalizePath(joinPath(prefix, path));
      const entry = key === MANIFEST_FILE ? undefined : manifest.files[key];
      const memo = entry && source.stamp && source.digests ? { stamp: source.stamp.bind(source), digests: source.digests } : undefined;
      // The stamp before and after the read: equal, the bytes are the file as stamped (no write in between).
      const before = memo && (await memo.stamp(path));
      const bytes = await source.read(path);
      if (!entry) return bytes;
      const stable = before !== undefined && memo !== undefined && (await memo.stamp(path)) === before;
      if (stable && bytes.length === entry.size && (await memo.digests.get(before)) === entry.sha256) return bytes; // hashed before, unchanged since
      const why = await manifestMismatch(manifest, key, bytes);
      if (why) throw new ModelFileError(`${source.root}/${normalizePath(path)}`, why);
      if (stable) await memo.digests.set(before, entry.sha256);
      return bytes;
    },
    exists: (path) => source.exists(path),
    sha256Of: (path) => manifest.files[normalizePath(joinPath(prefix, path))]?.sha256,
    // Behind a manifest a stamp vouches for more: it is given only while the memo holds the
    // manifest's digest for it, i.e. the file in this state was read and found to match.
    ...(source.stamp && source.digests
      ? {
          async stamp(path: string) {
            const entry = manifest.files[normalizePath(joinPath(prefix, path))];
            const stamp = await source.stamp!(path);
            if (!entry || stamp === undefined) return stamp;
            // A manifest naming another size vouches for nothing.
            if (stampSize(stamp) !== entry.size) return undefined;
            return (await source.digests!.get(stamp)) === entry.sha256 ? stamp : undefined;
          },
          digests: source.digests,
        }
      : {}),
    sub: (path) => verifiedSource(source.sub(path), manifest, normalizePath(joinPath(prefix, path))),
  };
}
