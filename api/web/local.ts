/**
 * The client-side page (dist/web/local.html, served by `bun run serve` at /local): the pipeline
 * runs in this tab on onnxruntime-web — WebGPU when the browser has an adapter, WASM otherwise —
 * with model files from Cache Storage after the first visit. `local.html?prompt=red+heart&seed=7`
 * starts drawing at once. State for tests and curious users: `window.local`.
 */
import { createBrowserAdapter } from "../../core/adapters/browser.ts";
import type { ExecutionProvider } from "../../core/onnx.ts";
import type { Tensor } from "../../core/tensor.ts";
import { builtinRegistry, bundleUrl, createDiffgraph, tensorToPngJs, type Diffgraph } from "./index.ts";
import { cachedUrlSource } from "./cached-source.ts";

/** What the page exposes as `window.local` (its tests read it). */
export interface LocalState {
  status: string;
  provider?: string;
  steps: number[];
  stepMs: number[];
  download: { loaded: number; total: number; fetched: number; cached: number };
  final?: { prompt: string; seed: number; steps: number; ms: number; dims: number[]; data?: number[] };
  error?: string;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const state: LocalState = { status: "idle", steps: [], stepMs: [], download: { loaded: 0, total: 0, fetched: 0, cached: 0 } };
(window as unknown as { local: LocalState }).local = state;

function say(status: string) {
  state.status = status;
  $("status").textContent = status;
}

const progress = $<HTMLProgressElement>("download");
const source = cachedUrlSource(bundleUrl, {
  onProgress: (p) => {
    state.download.loaded = p.loaded;
    if (p.total) state.download.total = Math.max(state.download.total, p.total);
    progress.max = state.download.total || 1;
    progress.value = p.fromCache && p.loaded === 0 ? progress.max : p.loaded;
    $("download-text").textContent =
      p.fromCache && p.loaded === 0 ? "model from this browser's cache (nothing downloaded)" : `downloaded ${(p.loaded / 1e6).toFixed(1)} / ${(state.download.total / 1e6).toFixed(1)} MB of model files (kept in Cache Storage for the next visit)`;
  },
});

const diffgraphs = new Map<string, Promise<Diffgraph>>();
function diffgraphFor(provider: ExecutionProvider): Promise<Diffgraph> {
  let d = diffgraphs.get(provider);
  if (!d) {
    d = createDiffgraph({
      adapter: { ...createBrowserAdapter({ wasmPaths: bundleUrl }), fileSource: (path) => source.sub(path) },
      executionProvider: provider,
      log: (m) => {
        console.log(m);
        $("log").textContent += `${m}\n`;
      },
    });
    diffgraphs.set(provider, d);
  }
  return d;
}

function drawPreview(t: Tensor) {
  const [, , h, w] = t.dims as [number, number, number, number];
  const canvas = $<HTMLCanvasElement>("preview");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(w, h);
  const plane = w * h;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) img.data[p * 4 + c] = Math.max(0, Math.min(255, Math.round(t.data[c * plane + p]! * 255)));
    img.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

async function generate() {
  const prompt = $<HTMLInputElement>("prompt").value.trim();
  const seed = Number($<HTMLInputElement>("seed").value);
  const steps = Number($<HTMLInputElement>("steps").value);
  const scheduler = $<HTMLSelectElement>("scheduler").value;
  const provider = $<HTMLSelectElement>("provider").value as ExecutionProvider;
  const pipelineName = $<HTMLSelectElement>("pipeline").value;
  state.steps = [];
  state.stepMs = [];
  state.error = undefined;
  $("error").textContent = "";
  $<HTMLButtonElement>("generate").disabled = true;
  try {
    say("loading model");
    const dg = await diffgraphFor(provider);
    const pipeline = await dg.openPipeline(`pipelines/${pipelineName}.json`);
    Object.assign(state.download, { fetched: source.stats.fetched, cached: source.stats.cached });
    // Sessions are created when the nodes first run, so what "auto" chose is known from the first step.
    const showProvider = () => {
      state.provider = dg.onnx.providersInUse.join(", ") || provider;
      $("provider-used").textContent = `running on ${state.provider}`;
    };
    say("generating");
    const t0 = performance.now();
    let last = t0;
    const r = await pipeline.run(
      { prompt, seed, steps, ...(scheduler ? { scheduler } : {}) },
      {
        preview: true,
        onEvent: (e) => {
          if (e.type !== "step") return;
          if (e.step === 1) showProvider();
          const now = performance.now();
          state.steps.push(e.step);
          state.stepMs.push(now - last);
          last = now;
          $("step").textContent = `step ${e.step} / ${e.totalSteps}`;
          if (e.preview) drawPreview(e.preview);
        },
      },
    );
    const ms = performance.now() - t0;
    showProvider();
    const png = await tensorToPngJs(r.images, 0);
    const img = document.createElement("img");
    img.className = "final";
    img.alt = prompt;
    img.width = 256;
    img.height = 256;
    img.src = URL.createObjectURL(new Blob([png as Uint8Array<ArrayBuffer>], { type: "image/png" }));
    await img.decode();
    $("finals").prepend(img);
    state.final = { prompt, seed, steps, ms, dims: [...r.images.dims], data: Array.from(r.images.data) };
    say(`done in ${(ms / 1000).toFixed(2)} s (${(ms / steps).toFixed(1)} ms/step) on ${state.provider}`);
  } catch (err) {
    state.error = (err as Error).message;
    $("error").textContent = state.error;
    say("failed");
  } finally {
    $<HTMLButtonElement>("generate").disabled = false;
  }
}

/** What the build put beside the page: pipelines with their model's download size, default first. */
type BuildInfo = { pipelines: { name: string; bytes: number; description?: string }[] };

async function main() {
  const q = new URLSearchParams(location.search);
  const info = (await (await fetch(new URL("models.json", bundleUrl))).json()) as BuildInfo;
  for (const p of info.pipelines) $("pipeline").append(new Option(`${p.name} (${(p.bytes / 1e6).toFixed(1)} MB download)`, p.name));
  for (const name of builtinRegistry().names("scheduler")) $("scheduler").append(new Option(name, name));
  for (const key of ["prompt", "seed", "steps", "scheduler", "provider", "pipeline"]) {
    const v = q.get(key);
    if (v !== null) ($(key) as HTMLInputElement).value = v;
  }
  const chosen = () => info.pipelines.find((p) => p.name === $<HTMLSelectElement>("pipeline").value);
  state.download.total = chosen()?.bytes ?? 0;
  $("pipeline").addEventListener("change", () => (state.download.total = chosen()?.bytes ?? 0));
  $<HTMLButtonElement>("generate").addEventListener("click", () => void generate());
  document.body.dataset.ready = "true";
  if (q.get("prompt")) await generate();
}

void main();
