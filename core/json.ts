/**
 * JSON as Python's `json` module writes it. `json.dump` (and so every diffusers `save_config`)
 * writes non-finite floats as the bare tokens `NaN`, `Infinity` and `-Infinity`, which RFC 8259 and
 * `JSON.parse` reject — a DPM-Solver++ config with `"lambda_min_clipped": -Infinity` is such a file.
 * `parsePythonJson` reads them as the numbers they stand for; everything else is plain `JSON.parse`
 * (its errors included), and the tokens inside strings are left alone.
 */

const NON_FINITE: Readonly<Record<string, number>> = { NaN: Number.NaN, Infinity: Number.POSITIVE_INFINITY, "-Infinity": Number.NEGATIVE_INFINITY };
/** Stands in for a non-finite number while JSON.parse runs; written escaped (`\u0001…`) into the text. */
const MARK = "\u0001diffgraph-non-finite:";
const MARK_ESCAPED = "\\u0001diffgraph-non-finite:";

export function parsePythonJson(text: string): unknown {
  if (!/NaN|Infinity/.test(text)) return JSON.parse(text);
  let out = "";
  let inString = false;
  let last = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      continue;
    }
    const token = text.startsWith("-Infinity", i) ? "-Infinity" : text.startsWith("Infinity", i) ? "Infinity" : text.startsWith("NaN", i) ? "NaN" : null;
    if (token) {
      out += `${text.slice(last, i)}"${MARK_ESCAPED}${token}"`;
      i += token.length - 1;
      last = i + 1;
    }
  }
  out += text.slice(last);
  return JSON.parse(out, (_key, value) => (typeof value === "string" && value.startsWith(MARK) ? NON_FINITE[value.slice(MARK.length)] : value));
}
