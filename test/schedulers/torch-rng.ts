/**
 * A test-only `Rng` that reproduces `torch.randn` on the CPU after `torch.manual_seed(seed)`, so
 * diffusers' stochastic full-loop tests (DDPM, Euler ancestral, LCM) can be matched number for
 * number. diffgraph itself uses core/random.ts; this exists only to replay torch's stream.
 *
 * torch's CPU generator is MT19937 (seeded like std::mt19937). `torch.randn(n)` for float32 with
 * n ≥ 16 (ATen `normal_fill`) first draws n uniforms u = (r & 0xFFFFFF)·2⁻²⁴, then, per block of 16,
 * applies Box–Muller to pairs (j, j+8): ρ = √(−2 ln(1 − u_j)), θ = 2π·u_{j+8},
 * z_j = ρ cos θ, z_{j+8} = ρ sin θ. diffusers draws one tensor per step, so `normal()` serves
 * consecutive blocks of `numel` values, each generated like one `torch.randn(numel)` call.
 */
import type { Rng } from "../../core/random.ts";

class MT19937 {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  constructor(seed: number) {
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.mt[i - 1]!;
      this.mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  }

  next(): number {
    if (this.index >= 624) {
      const mt = this.mt;
      for (let i = 0; i < 624; i++) {
        const y = (mt[i]! & 0x80000000) | (mt[(i + 1) % 624]! & 0x7fffffff);
        mt[i] = mt[(i + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = this.mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

export function torchRng(seed: number, numel: number): Rng {
  if (numel < 16 || numel % 16 !== 0) throw new RangeError("torchRng replays randn for sizes that are multiples of 16");
  const engine = new MT19937(seed);
  const uniform = () => (engine.next() & 0xffffff) / 16777216;
  let block = new Float32Array(0);
  let at = 0;
  const refill = () => {
    block = new Float32Array(numel);
    for (let i = 0; i < numel; i++) block[i] = uniform();
    for (let b = 0; b < numel; b += 16) {
      for (let j = 0; j < 8; j++) {
        const u1 = Math.fround(1 - block[b + j]!);
        const u2 = block[b + j + 8]!;
        const radius = Math.fround(Math.sqrt(Math.fround(-2 * Math.fround(Math.log(u1)))));
        const theta = 2 * Math.PI * u2;
        block[b + j] = radius * Math.cos(theta);
        block[b + j + 8] = radius * Math.sin(theta);
      }
    }
    at = 0;
  };
  const normal = () => {
    if (at >= block.length) refill();
    return block[at++]!;
  };
  return {
    uniform,
    normal,
    fillNormal(out) {
      for (let i = 0; i < out.length; i++) out[i] = normal();
      return out;
    },
    fork() {
      throw new Error("torchRng does not fork");
    },
  };
}
