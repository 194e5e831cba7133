/**
 * Independent references in numpy/scipy (Debian's python3-scipy, python3-onnx at /usr/bin/python3).
 * `.ci/run` installs them, and under CI their absence is a failure, not a skip; on a developer's
 * fresh machine with only Node.js the tests that need them are skipped and say so.
 */
const probe = Bun.spawnSync(["/usr/bin/python3", "-c", "import numpy, scipy.linalg, onnx"], { stdout: "ignore", stderr: "ignore" });
export const HAS_PYTHON_REFERENCE = probe.exitCode === 0 || !!process.env.CI;
if (!HAS_PYTHON_REFERENCE) console.warn("numpy/scipy/onnx for /usr/bin/python3 missing: reference checks skipped (apt-get install python3-scipy python3-onnx)");
