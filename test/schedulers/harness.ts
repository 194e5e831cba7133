/**
 * diffusers' scheduler test harness (tests/schedulers/test_schedulers.py, `SchedulerCommonTest`),
 * reimplemented: the deterministic sample and noise, the dummy model ε(x, t) = x·t/(t+1) in float32
 * as torch computes it, and the sum/mean of |x| their full-loop tests publish.
 */
import type { Tensor } from "../../core/tensor.ts";
import type { SchedulerInstance } from "../../core/plugin.ts";
import { getSchedulerPlugin } from "../../plugins/schedulers/index.ts";
import type { Scheduler } from "../../core/scheduler.ts";

const B = 4;
const C = 3;
const H = 8;
const W = 8;
const N = B * C * H * W;

/** torch.arange(N).reshape(C, H, W, B) / N, permuted to [B, C, H, W] (flip: the noise variant). */
function deter(flip: boolean): Tensor {
  const data = new Float32Array(N);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let h = 0; h < H; h++)
        for (let w = 0; w < W; w++) {
          const idx = ((c * H + h) * W + w) * B + b;
          data[((b * C + c) * H + h) * W + w] = (flip ? N - 1 - idx : idx) / N;
        }
  return { dims: [B, C, H, W], data };
}

export const dummySampleDeter = (): Tensor => deter(false);
export const dummyNoiseDeter = (): Tensor => deter(true);

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
  const instance = plugin.create(plugin.resolve(config), undefined as never) as SchedulerInstance;
  return instance.createScheduler() as Scheduler & { readonly config: Readonly<Record<string, unknown>> };
}
