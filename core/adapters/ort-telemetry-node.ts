/**
 * onnxruntime-node's telemetry, under Bun and Node: off unless the user has chosen.
 *
 * onnxruntime-node 1.30's Linux library records usage events (Microsoft's 1DS SDK) in a SQLite
 * database, `~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db` (10 MB here after a day of
 * tests), writes a device id beside it, and leaves an empty `/tmp/mat-debug-<pid>.log` behind every
 * process that creates a session. It reads `ORT_DISABLE_TELEMETRY` from the C environment when its
 * environment is created (`1` turns it off, `0` keeps it on; seen with strace). Doing that work costs a
 * cold CLI ≈ 17 ms (10 interleaved pairs, `README.md`, Performance). So before onnxruntime-node is
 * loaded, diffgraph sets `ORT_DISABLE_TELEMETRY=1` unless the variable is already set: a user who wants
 * onnxruntime's telemetry sets `ORT_DISABLE_TELEMETRY=0`.
 *
 * Node's `process.env` writes reach the C environment; Bun's do not (its `process.env` is a copy), so
 * under Bun libc's `setenv` is called through `bun:ffi`. Where neither works (no libc to open), nothing
 * changes and onnxruntime keeps its default.
 */

export const TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY";

/** What `ortTelemetryOff` did: "set" (now 1), "user" (the variable was already set), "unavailable". */
export type TelemetryChoice = "set" | "user" | "unavailable";

/**
 * Call before onnxruntime-node creates its environment (its first session); later calls change
 * nothing there. A value the user set, in the shell or in `process.env` from JavaScript, is kept.
 */
export function ortTelemetryOff(env: Record<string, string | undefined> = process.env): Promise<TelemetryChoice> {
  // The process's own environment is decided once (the adapter asks before every session it creates).
  if (env === process.env) return (decided ??= decide(env));
  return decide(env);
}

let decided: Promise<TelemetryChoice> | undefined;

async function decide(env: Record<string, string | undefined>): Promise<TelemetryChoice> {
  const user = env[TELEMETRY_VARIABLE];
  if (user === undefined) env[TELEMETRY_VARIABLE] = "1"; // Node: reaches getenv; Bun: only child processes see it
  // Under Bun the C environment must be told even of the user's own value, when they set it from
  // JavaScript (process.env.ORT_DISABLE_TELEMETRY = "1"); setenv without overwrite keeps the shell's.
  const reached = !("Bun" in globalThis) || env !== process.env || (await bunSetenv(TELEMETRY_VARIABLE, user ?? "1"));
  if (user !== undefined) return "user";
  return reached ? "set" : "unavailable";
}

async function bunSetenv(name: string, value: string): Promise<boolean> {
  const libc = process.platform === "linux" ? "libc.so.6" : process.platform === "darwin" ? "libc.dylib" : undefined;
  if (!libc) return false;
  try {
    const { dlopen, FFIType } = await import("bun:ffi");
    const lib = dlopen(libc, { setenv: { args: [FFIType.cstring, FFIType.cstring, FFIType.i32], returns: FFIType.i32 } });
    const c = (s: string) => new TextEncoder().encode(`${s}\0`);
    const ok = lib.symbols.setenv(c(name), c(value), 0) === 0; // 0: an existing value (the shell's) stays
    lib.close();
    return ok;
  } catch {
    return false;
  }
}
