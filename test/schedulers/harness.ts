/**
 * diffusers' scheduler test harness (tests/schedulers/test_schedulers.py, `SchedulerCommonTest`),
 * reimplemented: the deterministic sample and noise, the dummy model ε(x, t) = x·t/(t+1) in float32
 * as torch computes it, and the sum/mean of |x| their full-loop tests publish.
 */
import type { Tensor } from "../../core/tensor.ts";
import { getSchedulerPlugin } from "../../plugins/schedulers/index.ts";
import type { Scheduler } from "../../core/scheduler.ts";

/**
 * torch.arange(N).reshape(*rest, B) / N permuted to [B, *rest] (diffusers' 2-D [4, 3, 8, 8] and
 * 1-D [4, 3, 8] variants); `flip` reverses the arange first (the noise variant).
 */
function deter(flip: boolean, dims: readonly number[]): Tensor {
  const B = dims[0]!;
  const rest = dims.slice(1).reduce((a, b) => a * b, 1);
  const N = B * rest;
  const data = new Float32Array(N);
  for (let b = 0; b < B; b++)
    for (let r = 0; r < rest; r++) {
      const idx = r * B + b;
      data[b * rest + r] = (flip ? N - 1 - idx : idx) / N;
    }
  return { dims: [...dims], data };
}

export const SHAPE_2D = [4, 3, 8, 8] as const;
export const SHAPE_1D = [4, 3, 8] as const;
export const dummySampleDeter = (dims: readonly number[] = SHAPE_2D): Tensor => deter(false, dims);
export const dummyNoiseDeter = (dims: readonly number[] = SHAPE_2D): Tensor => deter(true, dims);

/** `sample * t / (t + 1)` with float32 rounding at each torch op. */
export function dummyModel(sample: Tensor, t: number): Tensor {
  const tf = Math.fround(t);
  const denom = Math.fround(tf + 1);
  const out = new Float32Array(sample.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(sample.data[i]! * tf) / denom;
  return { dims: [...sample.dims], data: out };
}

export function scale(t: Tensor, k: number): Tensor {
  return { dims: [...t.dims], data: t.data.map((v) => v * k) };
}

export function sumAbs(t: Tensor): number {
  let s = 0;
  for (const v of t.data) s += Math.abs(v);
  return s;
}
export const meanAbs = (t: Tensor): number => sumAbs(t) / t.data.length;

export function makeScheduler(name: string, config: Record<string, unknown> = {}): Scheduler & { readonly config: Readonly<Record<string, unknown>> } {
  const plugin = getSchedulerPlugin(name);
  const instance = plugin.create(config);
  return instance.createScheduler() as Scheduler & { readonly config: Readonly<Record<string, unknown>> };
}
