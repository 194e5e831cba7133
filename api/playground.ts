/**
 * The playground page at `/`: one self-contained HTML document (no build step, no CDN) that uses
 * the public GraphQL API only — queries for pipelines, schedulers and the schedule plot, the
 * generate mutation, and jobProgress over Server-Sent Events (EventSource, GET /graphql).
 */
export const playgroundHtml = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffgraph playground</title>
<style>
  :root { font-family: system-ui, sans-serif; color-scheme: light dark; }
  body { margin: 0 auto; max-width: 980px; padding: 16px; }
  h1 { font-size: 1.3rem; margin: 0 0 12px; }
  h1 a { font-size: .8rem; font-weight: normal; margin-left: 8px; }
  form { display: grid; grid-template-columns: auto 1fr auto 1fr; gap: 8px 12px; align-items: center; }
  form textarea { grid-column: 2 / 5; min-height: 3em; }
  label { font-size: .9rem; }
  button { grid-column: 1 / 5; padding: 8px; font-size: 1rem; }
  .row { display: flex; gap: 16px; flex-wrap: wrap; margin-top: 16px; }
  .panel { border: 1px solid #8884; border-radius: 6px; padding: 8px; }
  .panel h2 { font-size: .9rem; margin: 0 0 6px; }
  img.pix { image-rendering: pixelated; width: 256px; height: 256px; background: #8882; display: block; }
  #status { font-family: ui-monospace, monospace; font-size: .85rem; white-space: pre-wrap; }
  #error { color: #d33; }
  canvas { width: 420px; height: 260px; }
  #finals { display: flex; gap: 8px; flex-wrap: wrap; }
</style>
</head>
<body>
<h1>diffgraph playground <a href="/graphql">GraphiQL</a></h1>
<form id="form">
  <label for="prompt">Prompt</label>
  <textarea id="prompt" required maxlength="1000">a smiling face</textarea>
  <label for="pipeline">Pipeline</label>
  <select id="pipeline"></select>
  <label for="scheduler">Scheduler</label>
  <select id="scheduler"></select>
  <label for="steps">Steps</label>
  <input id="steps" type="number" min="1" max="1000" value="20">
  <label for="seed">Seed</label>
  <input id="seed" type="number" min="0" value="0">
  <label for="guidance">Guidance</label>
  <input id="guidance" type="number" min="0" max="50" step="0.5" value="7.5">
  <label for="apikey">API key</label>
  <input id="apikey" type="password" placeholder="(if the server needs one)">
  <button id="generate" type="submit">Generate</button>
</form>
<div id="error" role="alert"></div>
<div class="row">
  <div class="panel"><h2>Noise schedule <span id="schedule-label"></span></h2><canvas id="schedule-plot" width="840" height="520"></canvas></div>
  <div class="panel"><h2>Denoising <span id="step">–</span></h2><img id="frame" class="pix" alt="current denoising frame"></div>
  <div class="panel"><h2>Final</h2><div id="finals"></div><div id="metrics"></div></div>
</div>
<div class="panel" style="margin-top:16px"><div id="status">idle</div></div>
<script type="module">
const $ = (id) => document.getElementById(id);
const state = { frames: 0, steps: [], status: "idle", jobId: null, final: null };
window.playground = state; // read by the end-to-end test

async function gql(query, variables, { mutation = false } = {}) {
  const headers = { "content-type": "application/json", accept: "application/json" };
  const key = $("apikey").value;
  if (mutation && key) headers.authorization = "Bearer " + key;
  const res = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  if (body.errors?.length) {
    const e = body.errors[0];
    throw new Error(e.message + (e.extensions?.code ? " [" + e.extensions.code + "]" : ""));
  }
  return body.data;
}

function showError(err) { $("error").textContent = err ? String(err.message ?? err) : ""; }
function setStatus(text) { state.status = text; $("status").textContent = text; }

async function loadOptions() {
  const d = await gql("{ pipelines { name isDefault scheduler defaults { steps } } plugins(kind: SCHEDULER) { name description } }");
  $("pipeline").replaceChildren(...d.pipelines.map((p) => new Option(p.name, p.name, p.isDefault, p.isDefault)));
  const def = d.pipelines.find((p) => p.isDefault) ?? d.pipelines[0];
  $("scheduler").replaceChildren(...d.plugins.map((s) => Object.assign(new Option(s.name, s.name, s.name === def?.scheduler, s.name === def?.scheduler), { title: s.description })));
  if (def?.defaults?.steps) $("steps").value = def.defaults.steps;
  document.body.dataset.ready = "true";
  await drawSchedule();
}

let plotToken = 0;
async function drawSchedule() {
  const token = ++plotToken;
  const scheduler = $("scheduler").value;
  const steps = Number($("steps").value);
  if (!scheduler || !(steps >= 1 && steps <= 1000)) return;
  try {
    // The selected pipeline's scheduler config (its model's β schedule), with the chosen scheduler.
    const d = await gql("query($p: String, $s: String!, $n: Int!) { schedule(pipeline: $p, scheduler: $s, steps: $n) { timesteps alphasCumprod sigmas } }", { p: $("pipeline").value || null, s: scheduler, n: steps });
    if (token !== plotToken) return;
    plot(d.schedule);
    $("schedule-label").textContent = "(" + scheduler + ", " + d.schedule.timesteps.length + " steps)";
    document.body.dataset.plotted = String(d.schedule.timesteps.length);
    showError(null);
  } catch (err) { showError(err); }
}

function plot({ timesteps, alphasCumprod, sigmas }) {
  const c = $("schedule-plot"), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 70, R = 20, T = 20, B = 50;
  g.clearRect(0, 0, W, H);
  g.font = "20px system-ui"; g.fillStyle = g.strokeStyle = getComputedStyle(document.body).color;
  g.lineWidth = 1.5; g.strokeRect(L, T, W - L - R, H - T - B);
  const n = timesteps.length;
  const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
  const y = (v) => T + (1 - v) * (H - T - B);
  g.fillText("step →", W / 2 - 30, H - 12);
  g.fillText("1", L - 20, T + 14); g.fillText("0", L - 20, H - B);
  const line = (values, color, label, ly) => {
    g.strokeStyle = color; g.lineWidth = 3; g.beginPath();
    values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
    g.stroke(); g.fillStyle = color; g.fillText(label, W - R - 220, ly);
  };
  const abar = timesteps.map((t) => alphasCumprod[Math.max(0, Math.min(alphasCumprod.length - 1, Math.round(t)))]);
  line(abar, "#2a7ae2", "ᾱ_t (signal)", T + 30);
  const logs = sigmas.slice(0, n).map((s) => Math.log10(Math.max(s, 1e-4)));
  const lo = Math.min(...logs), hi = Math.max(...logs);
  line(logs.map((v) => (hi > lo ? (v - lo) / (hi - lo) : 0.5)), "#e2572a", "log σ_t (scaled)", T + 56);
}

function showFrame(step) {
  if (!step) return;
  $("step").textContent = "step " + step.step + " / " + step.totalSteps + " · t=" + Math.round(step.timestep) + " · " + Math.round(step.elapsedMs) + " ms";
  const p = step.previews?.[0];
  if (p) $("frame").src = p.dataUrl ?? p.url;
}

const PROGRESS = \`subscription($id: ID!) { jobProgress(id: $id) {
  __typename
  ... on JobSnapshot { job { status step } lastStep { step totalSteps timestep elapsedMs previews { dataUrl } } }
  ... on JobStep { step totalSteps timestep elapsedMs dropped previews { dataUrl } }
  ... on JobFinished { job { id status error images { url width height } metrics { name value } } }
} }\`;

function watch(id) {
  return new Promise((resolve) => {
    const url = "/graphql?query=" + encodeURIComponent(PROGRESS) + "&variables=" + encodeURIComponent(JSON.stringify({ id }));
    const es = new EventSource(url);
    es.addEventListener("next", (m) => {
      const { data, errors } = JSON.parse(m.data);
      if (errors?.length) { showError(errors[0].message); return; }
      const e = data.jobProgress;
      if (e.__typename === "JobSnapshot") { setStatus("job " + id + ": " + e.job.status); showFrame(e.lastStep); }
      else if (e.__typename === "JobStep") {
        state.frames++; state.steps.push(e.step);
        setStatus("job " + id + ": RUNNING" + (e.dropped ? " (" + e.dropped + " frames skipped)" : ""));
        showFrame(e);
      } else {
        const j = e.job;
        state.final = j;
        setStatus("job " + id + ": " + j.status + (j.error ? " — " + j.error : ""));
        $("finals").replaceChildren(...j.images.map((im) => Object.assign(document.createElement("img"), { src: im.url, className: "pix final", alt: "final image" })));
        $("metrics").textContent = j.metrics.map((m) => m.name + " = " + m.value.toFixed(4)).join("\\n");
        es.close(); resolve(j);
      }
    });
    es.addEventListener("complete", () => { es.close(); resolve(null); });
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) resolve(null); };
  });
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError(null);
  state.frames = 0; state.steps = []; state.final = null;
  $("finals").replaceChildren(); $("metrics").textContent = ""; $("step").textContent = "–";
  $("generate").disabled = true;
  try {
    const input = {
      prompt: $("prompt").value,
      pipeline: $("pipeline").value || undefined,
      scheduler: $("scheduler").value || undefined,
      steps: Number($("steps").value),
      seed: Number($("seed").value),
      guidanceScale: Number($("guidance").value),
      metrics: true,
    };
    const d = await gql("mutation($input: GenerateInput!) { generate(input: $input) { id status } }", { input }, { mutation: true });
    state.jobId = d.generate.id;
    setStatus("job " + d.generate.id + ": " + d.generate.status);
    await watch(d.generate.id);
  } catch (err) { showError(err); }
  finally { $("generate").disabled = false; }
});
$("scheduler").addEventListener("change", drawSchedule);
$("pipeline").addEventListener("change", drawSchedule);
$("steps").addEventListener("input", drawSchedule);
loadOptions().catch(showError);
</script>
</body>
</html>
`;
