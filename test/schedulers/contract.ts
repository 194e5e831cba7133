/**
 * The contract every scheduler plugin meets (after hono's `runTest({ newRouter })` and diffusers'
 * `SchedulerCommonTest`): interface, timestep layout for every spacing, exact recovery of x₀ from a
 * perfect noise predictor, the forward process, and agreement of ε / v / x₀ parameterisations.
 */
import { describe, expect, test } from "bun:test";
import { createRng, type Rng } from "../../core/random.ts";
import type { Scheduler } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { TIMESTEP_SPACINGS } from "../../plugins/schedulers/config.ts";
import { makeScheduler } from "./harness.ts";

export interface ContractOptions {
  /** Plugin name. */
  readonly name: string;
  /** Config to start from (diffusers keys). */
  readonly config?: Record<string, unknown>;
  /** Step counts to try (default 1, 2, 7, 10, 50). */
  readonly steps?: readonly number[];
  /** Solver visits each timestep after the first twice (Heun) or in pseudo-RK pairs (PNDM). */
  readonly repeatsTimesteps?: boolean;
  /** Heun's layout exactly: t₀ once, then every later timestep twice in a row. */
  readonly heunPairs?: boolean;
  /** Step draws noise from the rng. */
  readonly stochastic?: boolean;
  /** Step counts for the x₀-recovery test (default 1, 4, 10, 25). */
  readonly recoverySteps?: readonly number[];
  /** The solver cannot be entered mid-schedule (PNDM's Runge–Kutta phase). */
  readonly noBeginIndex?: boolean;
  /** Steps (in units of `order`) to skip in the img2img test (default 1, 3, 6). */
  readonly beginSteps?: readonly number[];
  /** Prediction types that must agree with ε (default v_prediction and sample). */
  readonly agreeingTypes?: readonly string[];
}

const SHAPE = [2, 4, 4, 4];
const SIZE = 128;

function randomTensor(rng: Rng, lo = -1, hi = 1): Tensor {
  const data = new Float32Array(SIZE);
  for (let i = 0; i < SIZE; i++) data[i] = lo + (hi - lo) * rng.uniform();
  return { dims: SHAPE, data };
}
const filled = (v: number): Tensor => ({ dims: SHAPE, data: new Float32Array(SIZE).fill(v) });

/** √ᾱ and √(1−ᾱ) of what the model sees at `t`, read back through the scheduler's own API. */
function vpCoefficients(s: Scheduler, t: number): [number, number] {
  const a = s.scaleModelInput(s.addNoise(filled(1), filled(0), t), t).data[0]!;
  const b = s.scaleModelInput(s.addNoise(filled(0), filled(1), t), t).data[0]!;
  return [a, b];
}

type Model = (xIn: Tensor, t: number, a: number, b: number) => Tensor;

/** Run a full sampling loop from `x` with `model` returning the output for the configured prediction type. */
export function sample(s: Scheduler, x: Tensor, model: Model, rng?: Rng): Tensor {
  for (const t of s.timesteps) {
    const [a, b] = vpCoefficients(s, t);
    const xIn = s.scaleModelInput(x, t);
    x = s.step(model(xIn, t, a, b), t, x, rng).prevSample;
  }
  return x;
}

/** ε → output of a prediction type, given x_in = a·x₀ + b·ε. */
function asPrediction(type: string, eps: Float32Array, xIn: Float32Array, a: number, b: number): Float32Array {
  const out = new Float32Array(eps.length);
  for (let i = 0; i < eps.length; i++) {
    const x0 = (xIn[i]! - b * eps[i]!) / a;
    out[i] = type === "epsilon" ? eps[i]! : type === "v_prediction" ? a * eps[i]! - b * x0 : x0;
  }
  return out;
}

export function runSchedulerContract(opts: ContractOptions): void {
  const { name } = opts;
  const base = opts.config ?? {};
  const stepsList = opts.steps ?? [1, 2, 7, 10, 50];
  const rngFor = (seed: number) => createRng(seed);

  describe(`scheduler contract: ${name}`, () => {
    test("implements the Scheduler interface", () => {
      const s = makeScheduler(name, base);
      expect(s.order).toBeGreaterThanOrEqual(1);
      for (const m of ["setTimesteps", "setBeginIndex", "scaleModelInput", "step", "addNoise", "schedule"] as const) {
        expect(typeof s[m]).toBe("function");
      }
      s.setTimesteps(10);
      expect(Number.isFinite(s.initNoiseSigma) && s.initNoiseSigma > 0).toBe(true);
      const sd = s.schedule();
      expect(sd.scheduler).toBe(name);
      expect(sd.numInferenceSteps).toBe(10);
      expect(sd.timesteps).toEqual([...s.timesteps]);
      const T = (base.num_train_timesteps as number | undefined) ?? 1000;
      for (const arr of [sd.betas, sd.alphas, sd.alphasCumprod]) expect(arr.length).toBe(T);
      expect(sd.logSnr.length).toBe(s.timesteps.length);
      expect(sd.sigmas.length).toBeGreaterThanOrEqual(s.timesteps.length);
      const x = filled(0.5);
      expect(s.scaleModelInput(x, s.timesteps[0]!).dims).toEqual(SHAPE);
    });

    test("timesteps decrease and stay within the training range, for every spacing and step count", () => {
      for (const spacing of TIMESTEP_SPACINGS) {
        for (const offset of [0, 1]) {
          for (const n of stepsList) {
            const s = makeScheduler(name, { ...base, timestep_spacing: spacing, steps_offset: offset });
            s.setTimesteps(n);
            const ts = s.timesteps;
            const T = s.schedule().betas.length;
            const where = `${spacing}, steps_offset ${offset}, ${n} steps: [${ts.join(", ")}]`;
            expect(ts.length, where).toBeGreaterThanOrEqual(n);
            for (const t of ts) expect(t >= 0 && t <= T - 1, where).toBe(true);
            if (opts.heunPairs) {
              expect(ts.length, where).toBe(2 * n - 1);
              for (let k = 1; k < n; k++) expect(ts[2 * k - 1], where).toBe(ts[2 * k]!);
            }
            // Unique values strictly decrease; a value repeats at most once in a row (Heun, PNDM's RK).
            let run = 1;
            for (let i = 1; i < ts.length; i++) {
              if (ts[i] === ts[i - 1]) {
                run++;
                expect(opts.repeatsTimesteps && run <= 2, `repeated ${ts[i]} in ${where}`).toBe(true);
              } else {
                run = 1;
                expect(ts[i]! < ts[i - 1]!, where).toBe(true);
              }
            }
          }
        }
      }
    });

    test("a perfect noise predictor recovers x₀", () => {
      for (const n of opts.recoverySteps ?? [1, 4, 10, 25]) {
        // Ending at ᾱ = 1 (with set_alpha_to_one false, DDIM/PNDM/LCM stop at ᾱ_0, just short of x₀).
        const s = makeScheduler(name, { ...base, set_alpha_to_one: true });
        s.setTimesteps(n);
        const rng = rngFor(n);
        const x0 = randomTensor(rng, -0.9, 0.9);
        const eps = randomTensor(rng);
        for (let i = 0; i < SIZE; i++) eps.data[i] = rng.normal();
        let x = s.addNoise(x0, eps, s.timesteps[0]!);
        const trueEps: Model = (xIn, _t, a, b) => ({
          dims: SHAPE,
          data: xIn.data.map((v, i) => (v - a * x0.data[i]!) / b),
        });
        x = sample(s, x, trueEps, opts.stochastic ? rng : undefined);
        let err = 0;
        for (let i = 0; i < SIZE; i++) err = Math.max(err, Math.abs(x.data[i]! - x0.data[i]!));
        expect(err, `${n} steps: max |x − x₀| = ${err}`).toBeLessThan(2e-4);
      }
    });

    test.skipIf(!!opts.noBeginIndex)("img2img: entered mid-schedule with setBeginIndex, a perfect predictor recovers x₀", () => {
      for (const skip of opts.beginSteps ?? [1, 3, 6]) {
        const s = makeScheduler(name, { ...base, set_alpha_to_one: true });
        s.setTimesteps(10);
        const start = skip * s.order;
        const rng = rngFor(skip);
        const x0 = randomTensor(rng, -0.9, 0.9);
        const eps = randomTensor(rng);
        for (let i = 0; i < SIZE; i++) eps.data[i] = rng.normal();
        const timesteps = s.timesteps.slice(start);
        s.setBeginIndex(start);
        let x = s.addNoise(x0, eps, timesteps[0]!);
        for (const t of timesteps) {
          const [a, b] = vpCoefficients(s, t);
          const xIn = s.scaleModelInput(x, t);
          const e = { dims: SHAPE, data: xIn.data.map((v, i) => (v - a * x0.data[i]!) / b) };
          x = s.step(e, t, x, opts.stochastic ? rng : undefined).prevSample;
        }
        let err = 0;
        for (let i = 0; i < SIZE; i++) err = Math.max(err, Math.abs(x.data[i]! - x0.data[i]!));
        expect(err, `from step ${start}: max |x − x₀| = ${err}`).toBeLessThan(2e-4);
      }
    });

    test("addNoise is √ᾱ_t·x₀ + √(1−ᾱ_t)·ε as the model sees it", () => {
      const rng = rngFor(7);
      const x0 = randomTensor(rng);
      const eps = randomTensor(rng);
      const cfg = { ...base, timestep_spacing: "leading" };
      const probe = makeScheduler(name, cfg);
      probe.setTimesteps(10);
      const sd = probe.schedule();
      probe.timesteps.forEach((t, i) => {
        const s = makeScheduler(name, cfg);
        s.setTimesteps(10);
        const got = s.scaleModelInput(s.addNoise(x0, eps, t), t);
        // ᾱ of this step as the schedule reports it (σ² = (1−ᾱ)/ᾱ) …
        const abar = 1 / (1 + sd.sigmas[i]! ** 2);
        // … which, on the training grid, is the training ᾱ_t (Karras σ lie between grid points).
        if (Number.isInteger(t) && !base.use_karras_sigmas) {
          expect(Math.abs(abar - sd.alphasCumprod[t]!) / sd.alphasCumprod[t]!, `t = ${t}`).toBeLessThan(1e-6);
        }
        const a = Math.sqrt(abar);
        const b = Math.sqrt(1 - abar);
        for (let j = 0; j < SIZE; j++) {
          expect(Math.abs(got.data[j]! - (a * x0.data[j]! + b * eps.data[j]!)), `t = ${t}`).toBeLessThan(2e-6);
        }
      });
    });

    test("ε, v and x₀ prediction types agree on the same underlying model", () => {
      const results = ["epsilon", ...(opts.agreeingTypes ?? ["v_prediction", "sample"])].map((type) => {
        const s = makeScheduler(name, { ...base, prediction_type: type, clip_sample: false });
        s.setTimesteps(8);
        const x = { dims: SHAPE, data: randomTensor(rngFor(3)).data.map((v) => v * s.initNoiseSigma) };
        // A smooth, t-dependent ε model, expressed in each parameterisation.
        const model: Model = (xIn, t, a, b) => {
          const eps = xIn.data.map((v, i) => 0.8 * v + 0.1 * Math.sin(i + t / 100));
          return { dims: SHAPE, data: asPrediction(type, eps, xIn.data, a, b) };
        };
        return sample(s, x, model, opts.stochastic ? rngFor(11) : undefined);
      });
      for (const other of results.slice(1)) {
        let err = 0;
        for (let i = 0; i < SIZE; i++) err = Math.max(err, Math.abs(other.data[i]! - results[0]!.data[i]!));
        expect(err).toBeLessThan(1e-4);
      }
    });

    test("stochastic steps need the rng, and the same seed reproduces the same sample", () => {
      const run = (rng?: Rng) => {
        const s = makeScheduler(name, base);
        s.setTimesteps(6);
        const x = randomTensor(rngFor(5));
        return sample(s, { dims: SHAPE, data: x.data.map((v) => v * s.initNoiseSigma) }, (xIn) => ({ dims: SHAPE, data: xIn.data.map((v) => 0.5 * v) }), rng);
      };
      if (opts.stochastic) {
        expect(() => run()).toThrow(/rng/);
        expect(run(rngFor(1)).data).toEqual(run(rngFor(1)).data);
      } else {
        expect(run().data).toEqual(run(rngFor(1)).data);
      }
    });
  });
}
