/**
 * Attention weights in prompts, written as AUTOMATIC1111's web UI reads them (and compel's
 * `(word)1.3`-free subset of it):
 *
 *   (word)        × 1.1          ((word)) × 1.21       [word] ÷ 1.1
 *   (word:1.3)    × 1.3          (a (b:0.5) c:2) → a, c × 2 and b × 1 (2 · 0.5)
 *   \( \) \[ \]   literal brackets
 *
 * An unclosed bracket weights the rest of the prompt; a `)` or `]` without its opener is literal
 * text. Adjacent fragments of equal weight are merged, so a prompt without brackets is one
 * fragment of weight 1. The word `BREAK` (upper case, on its own) starts a new encoder window, as in
 * A1111: it becomes a fragment with `break: true`.
 */
export interface WeightedFragment {
  readonly text: string;
  readonly weight: number;
  readonly break?: true;
}

const ROUND = 1.1;
const SQUARE = 1 / 1.1;
const TOKEN = /\\[()[\]\\]|\\|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()[\]:]+|:/g;

export function parsePromptWeights(prompt: string): WeightedFragment[] {
  const pieces = prompt.split(/\s*\bBREAK\b\s*/);
  if (pieces.length > 1) return pieces.flatMap((p, i) => [...(i > 0 ? [{ text: "", weight: 1, break: true as const }] : []), ...weighted(p)]);
  return weighted(prompt);
}

function weighted(prompt: string): WeightedFragment[] {
  const parts: { text: string; weight: number }[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const scale = (from: number, by: number) => {
    for (let i = from; i < parts.length; i++) parts[i]!.weight *= by;
  };
  for (const m of prompt.matchAll(TOKEN)) {
    const tok = m[0];
    if (tok.length === 2 && tok[0] === "\\") parts.push({ text: tok[1]!, weight: 1 });
    else if (tok === "(") round.push(parts.length);
    else if (tok === "[") square.push(parts.length);
    else if (m[1] !== undefined && round.length > 0) scale(round.pop()!, Number(m[1]));
    else if (tok === ")" && round.length > 0) scale(round.pop()!, ROUND);
    else if (tok === "]" && square.length > 0) scale(square.pop()!, SQUARE);
    else parts.push({ text: tok, weight: 1 });
  }
  for (const at of round) scale(at, ROUND);
  for (const at of square) scale(at, SQUARE);
  const merged: { text: string; weight: number }[] = [];
  for (const p of parts) {
    const last = merged[merged.length - 1];
    if (last && last.weight === p.weight) last.text += p.text;
    else merged.push({ ...p });
  }
  return merged.length ? merged : [{ text: "", weight: 1 }];
}
