/**
 * The playground end to end in headless Chromium (Debian `chromium` + playwright-core): options
 * load, the schedule is plotted, and a generation shows every denoising frame live, then the
 * final image. Skipped when no Chromium is installed (CI installs it; see api/README.md).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";
import { GENERATE, startTestServer, type TestServer } from "./helpers.ts";

const executablePath = process.env.CHROMIUM_PATH ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);

describe.skipIf(!executablePath)("playground in headless Chromium", () => {
  let server: TestServer;
  let browser: Browser;
  beforeAll(async () => {
    server = await startTestServer();
    browser = await chromium.launch({
      executablePath,
      args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  }, 30_000);

  test("prompt → live frames → final image", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(server.url + "/");
    await page.waitForSelector("body[data-ready=true]");
    expect(await page.locator("#scheduler option").count()).toBeGreaterThan(3);

    await page.selectOption("#scheduler", "ddim");
    await page.fill("#steps", "6");
    await page.waitForSelector("body[data-plotted='6']");

    // Keep the only slot busy so the page's job is still queued when it subscribes: then it must see all 6 frames.
    // tiny-sd is fast: 500 steps at 64 px can end before the page submits; at 1024 px each step takes
    // milliseconds, so 999 (the most its leading-spaced schedule allows) hold the slot until cancelled.
    const blocker = await server.gql(GENERATE, { input: { prompt: "blocker", steps: 999, height: 1024, width: 1024, scheduler: "ddim", previewEvery: 0 } });
    await page.fill("#prompt", "a yellow star");
    await page.click("#generate");
    await page.waitForFunction(() => (window as any).playground.status.includes("QUEUED"));
    await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: blocker.data.generate.id });

    await page.waitForSelector("#finals img.final", { timeout: 20_000 });
    const state = await page.evaluate(() => (window as any).playground);
    expect(state.steps).toEqual([1, 2, 3, 4, 5, 6]);
    expect(state.final.status).toBe("SUCCEEDED");
    const naturalWidth = await page.locator("#finals img.final").first().evaluate((img: HTMLImageElement) => img.decode().then(() => img.naturalWidth));
    expect(naturalWidth).toBe(64);
    expect(await page.locator("#frame").getAttribute("src")).toStartWith("data:image/png;base64,");
    expect(await page.textContent("#step")).toContain("step 6 / 6");
    expect(errors).toEqual([]);
    await page.close();
  }, 60_000);

  test("a bound violation shows the server's message", async () => {
    const page = await browser.newPage();
    await page.goto(server.url + "/");
    await page.waitForSelector("body[data-ready=true]");
    await page.$eval("#steps", (el: HTMLInputElement) => el.removeAttribute("max"));
    await page.fill("#steps", "5000");
    await page.click("#generate");
    await page.waitForFunction(() => document.getElementById("error")!.textContent!.includes("BAD_USER_INPUT"));
    expect(await page.textContent("#error")).toContain("input.steps");
    await page.close();
  }, 60_000);
});
