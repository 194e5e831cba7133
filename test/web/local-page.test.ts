/**
 * The client-side page (`bun run build:web`, served by `serve` at /local) end to end in headless
 * Chromium (Debian `chromium` + playwright-core): a link with a prompt starts drawing at once, every
 * step's preview shows, the final image is an <img alt=prompt>, and the pixels are Bun/CPU's within
 * 1e-3 — on WASM, and on WebGPU where Chromium has an adapter (SwiftShader here: slow, so 2 steps).
 * A second visit reads the model from Cache Storage and fetches no model file. Skipped without
 * Chromium outside CI; under CI (which installs it) its absence is a failure.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { toRgb8 } from "../../core/png.ts";
import type { Tensor } from "../../core/tensor.ts";
import { buildWeb } from "../../api/cli/build-web.ts";
import { startTestServer, type TestServer } from "../api/helpers.ts";
import { diffgraph, maxAbsDiff } from "../helpers.ts";
import { reportRow, TABLE } from "../runtimes/determinism.ts";
import type { LocalState } from "../../api/web/local.ts";

const executablePath = process.env.CHROMIUM_PATH ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
if (!executablePath && !process.env.CI) console.warn("chromium not installed (apt-get install chromium): the client-side page test is skipped");
const run = !!executablePath || !!process.env.CI;
const BOUND = TABLE.bound;
const { prompt, seed, steps } = TABLE.input;
const link = (provider: string) => `?prompt=${encodeURIComponent(prompt)}&seed=${seed}&steps=${steps}&provider=${provider}&pipeline=${TABLE.pipelineName}`;


async function drawn(page: Page, timeout: number): Promise<LocalState> {
  await page.waitForFunction(() => (window as any).local?.final || (window as any).local?.error, null, { timeout });
  const s = (await page.evaluate(() => (window as any).local)) as LocalState;
  if (s.error) throw new Error(`the page failed: ${s.error}`);
  return s;
}

/** GET requests for model and pipeline files, counted per page (onnxruntime-web's own .wasm is the HTTP cache's business). */
function modelRequests(page: Page): string[] {
  const seen: string[] = [];
  page.on("request", (r) => {
    if (r.method() === "GET" && /\/local\/(models|pipelines)\//.test(r.url())) seen.push(r.url());
  });
  return seen;
}

describe.skipIf(!run)("client-side page (/local) in headless Chromium", () => {
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let ref: Tensor;
  let first: LocalState;

  beforeAll(async () => {
    if (!executablePath) throw new Error("chromium missing under CI (.ci/run installs Debian's chromium)");
    await buildWeb();
    server = await startTestServer();
    browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"] });
    context = await browser.newContext();
    const dg = await diffgraph();
    ref = (await (await dg.openPipeline(TABLE.pipeline)).run(TABLE.input)).images;
    await dg.dispose();
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  }, 30_000);

  test("a link draws at once on WASM: live previews, then <img alt=prompt>, pixels = Bun/CPU", async () => {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const gets = modelRequests(page);
    await page.goto(`${server.url}/local${link("wasm")}`);
    first = await drawn(page, 120_000);
    expect(new URL(page.url()).pathname).toBe("/local/");
    expect(first.provider).toBe("onnxruntime-web/wasm");
    expect(first.steps).toEqual(Array.from({ length: steps }, (_, i) => i + 1));
    const img = page.locator("#finals img.final").first();
    expect(await img.getAttribute("alt")).toBe(prompt);
    expect(await img.evaluate((el: HTMLImageElement) => el.naturalWidth)).toBe(64);
    expect(await page.textContent("#status")).toContain("onnxruntime-web/wasm");
    // The live preview was drawn (not the blank canvas).
    expect(await page.evaluate(() => { const c = document.getElementById("preview") as HTMLCanvasElement; const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data; return d.some((v, i) => i % 4 !== 3 && v !== 0); })).toBe(true);
    const diff = maxAbsDiff(first.final!.data!, ref.data);
    reportRow("chromium", "wasm", diff, first.final!.ms / steps);
    expect(diff).toBeLessThan(BOUND);
    expect(first.download.fetched).toBeGreaterThan(0);
    expect(gets.length).toBe(first.download.fetched);
    expect(first.download.loaded).toBeGreaterThan(30e6);
    mkdirSync("reports", { recursive: true });
    await page.screenshot({ path: "reports/local-page-wasm.png", fullPage: true });
    console.log(`Chromium WASM: steps ${first.stepMs.map((m) => m.toFixed(0)).join(", ")} ms; ${first.download.fetched} model files, ${(first.download.loaded / 1e6).toFixed(1)} MB downloaded`);
    expect(errors).toEqual([]);
    await page.close();
  }, 150_000);

  test("a second visit reads the model from Cache Storage: no model file is fetched again", async () => {
    const page = await context.newPage();
    const gets = modelRequests(page);
    await page.goto(`${server.url}/local/${link("wasm")}`);
    const again = await drawn(page, 120_000);
    expect(gets).toEqual([]);
    expect(again.download.fetched).toBe(0);
    expect(again.download.cached).toBeGreaterThan(0);
    expect(maxAbsDiff(again.final!.data!, first.final!.data!)).toBe(0);
    await page.close();
  }, 150_000);

  test("auto picks WebGPU where Chromium has an adapter and says so; pixels = Bun/CPU", async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/local/${link("auto")}`);
    const adapter = await page.evaluate(async () => !!(await (navigator as any).gpu?.requestAdapter()));
    const s = await drawn(page, 240_000);
    await page.screenshot({ path: "reports/local-page-auto.png", fullPage: true });
    if (!adapter) {
      // No adapter in this Chromium: auto must fall back to WASM and say which it chose.
      console.warn("Chromium has no WebGPU adapter here: WebGPU not tested, only auto's fallback");
      expect(s.provider).toBe("onnxruntime-web/wasm");
    } else expect(s.provider).toBe("onnxruntime-web/webgpu");
    expect(await page.textContent("#provider-used")).toContain(s.provider!);
    const diff = maxAbsDiff(s.final!.data!, ref.data);
    reportRow("chromium", s.provider!.split("/")[1]!, diff, s.final!.ms / steps);
    expect(diff).toBeLessThan(BOUND);
    console.log(`Chromium auto → ${s.provider}: max |Δ| vs Bun/CPU ${diff.toExponential(2)}; steps ${s.stepMs.map((m) => m.toFixed(0)).join(", ")} ms (the first compiles the shaders)`);
    await page.close();
  }, 300_000);
});

describe.skipIf(!run)("the README's web-page example, as written", () => {
  test("draws the emoji-64-fp16 heart Bun/CPU draws (within one 8-bit level)", async () => {
    const block = /<!-- web-example -->\s*```html\n([\s\S]*?)```/.exec(readFileSync("README.md", "utf8"))?.[1];
    expect(block, "README.md: the ```html block after <!-- web-example -->").toBeDefined();
    const { out } = await buildWeb();
    writeFileSync(`${out}/hello.html`, block!);
    const server = await startTestServer();
    // Without --enable-unsafe-webgpu this Chromium has no WebGPU, so "auto" takes WASM (20 steps on
    // SwiftShader would take minutes); the WebGPU path is the page test's.
    const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-background-networking", "--no-first-run"] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${server.url}/local/hello.html`);
      await page.waitForSelector('img[alt="red heart"]', { timeout: 120_000 });
      const rgb = await page.evaluate(async () => {
        const img = document.querySelector("img") as HTMLImageElement;
        await img.decode();
        const c = document.createElement("canvas");
        c.width = img.naturalWidth;
        c.height = img.naturalHeight;
        const ctx = c.getContext("2d")!;
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        return Array.from({ length: c.width * c.height * 3 }, (_, i) => d[Math.floor(i / 3) * 4 + (i % 3)]!);
      });
      const dg = await diffgraph();
      const want = (await (await dg.openPipeline("pipelines/emoji-64-fp16.json")).run({ prompt: "red heart", seed: 7, steps: 20 })).images;
      await dg.dispose();
      expect(rgb.length).toBe(64 * 64 * 3);
      expect(maxAbsDiff(rgb, toRgb8(want).data)).toBeLessThanOrEqual(1);
      await page.screenshot({ path: "reports/readme-web-example.png" });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await server.close();
    }
  }, 180_000);
});
