/**
 * The /local route of the API app (the client-side page's static files, read through the host's
 * `localFiles`), without a socket: the query survives the redirect to /local/, types are right for
 * module scripts, and nothing outside the web build folder is served.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { staticFiles } from "../../api/adapters/static-files-node.ts";
import { openSqliteStore } from "../../api/adapters/sqlite-bun.ts";
import { pipelineFiles } from "../../api/adapters/pipeline-files-node.ts";
import { createApp } from "../../api/app.ts";
import { ApiService } from "../../api/service.ts";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { builtinRegistry } from "../../plugins/index.ts";

let dir: string;
let app: ReturnType<typeof createApp>["app"];
let service: ApiService;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dg-local-route-"));
  mkdirSync(join(dir, "web/sub"), { recursive: true });
  mkdirSync(join(dir, "pipelines"));
  writeFileSync(join(dir, "web/local.html"), "<!doctype html><title>local</title>");
  writeFileSync(join(dir, "web/sub/glue.mjs"), "export {};");
  writeFileSync(join(dir, "secret.txt"), "not served");
  const tiny = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8"));
  tiny.model = resolve("models/tiny-sd");
  writeFileSync(join(dir, "pipelines/tiny-sd.json"), JSON.stringify(tiny));
  const diffgraph = await createDiffgraph({ registry: builtinRegistry(), log: () => {}, threads: 1 });
  service = await ApiService.create({ diffgraph, store: openSqliteStore(join(dir, "data")), pipelineFiles: await pipelineFiles(join(dir, "pipelines")), log: () => {} });
  app = createApp({ service, localFiles: staticFiles(join(dir, "web")) }).app;
});
afterAll(async () => {
  await service?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("/local keeps the query across the redirect to /local/, which serves the page", async () => {
  const r = await app.request("/local?prompt=red+heart&seed=7");
  expect(r.status).toBe(302);
  expect(r.headers.get("location")).toBe("/local/?prompt=red+heart&seed=7");
  const page = await app.request("/local/?prompt=red+heart");
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toStartWith("text/html");
  expect(await page.text()).toContain("<title>local</title>");
});

test("module scripts are served as JavaScript (a module import refuses any other type)", async () => {
  const r = await app.request("/local/sub/glue.mjs");
  expect(r.headers.get("content-type")).toBe("text/javascript");
});

test("a missing file is 404 with the command that builds it; nothing outside the folder is served", async () => {
  const missing = await app.request("/local/nope.js");
  expect(missing.status).toBe(404);
  expect(((await missing.json()) as { error: string }).error).toContain("bun run build:web");
  expect((await app.request("/local/%2e%2e/secret.txt")).status).toBe(404);
  expect(await staticFiles(join(dir, "web"))("../secret.txt")).toBeUndefined();
  expect(await staticFiles(join(dir, "web"))("sub/../../secret.txt")).toBeUndefined();
});
