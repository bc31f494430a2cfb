#!/usr/bin/env bash
# One command for a session with a GPU (the device machine): test the GPU paths, then benchmark.
#
#   bash benchmarks/gpu_session.sh            # from the repository root; results go to $OUT
#
# Steps (each with its own time limit; the whole script stays under ~9.5 minutes):
#   1. `pip install --no-deps -e .` (the only install; falls back to PYTHONPATH=. if it cannot build)
#   2. environment report: nvidia-smi, Python, CuPy/NumPy/torch versions          -> $OUT/env.txt
#   3. GPU tests: every test marked `gpu` (the CuPy backend of the `xp` fixture across the suite,
#      and tests/test_gpu_fused.py's real-kernel tests), not `slow`/`llm`       -> $OUT/gpu-tests.log, .xml
#   4. `ptq-bounds bench --device gpu` on the five default shapes                 -> $OUT/bench_gpu.json, .log
#   5. the generic array-API loop on CuPy (--kernel generic) at 4096², for the speed-up of the kernel
#                                                                                  -> $OUT/bench_gpu_generic.json
# Exit status: 0 when the tests passed and the benchmark ran; the logs say what failed otherwise.
# Commit $OUT/bench_gpu.json as benchmarks/results/bench_gpu_<timestamp>.json afterwards.
set -u
OUT="${OUT:-$(pwd)/gpu-session-out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python}"
T0=$(date +%s)
status=0
log() { echo "[gpu_session $(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/session.log"; }

# -- 1. install ---------------------------------------------------------------------------------------
if [ "${PTQ_SKIP_INSTALL:-0}" = 1 ]; then
  log "skipping the install (PTQ_SKIP_INSTALL=1)"
else
log "pip install --no-deps -e ."
if ! timeout 120 "$PY" -m pip install --no-deps -e . >"$OUT/pip.log" 2>&1; then
  log "editable install failed (see pip.log); retrying without build isolation"
  timeout 120 "$PY" -m pip install --no-deps --no-build-isolation -e . >>"$OUT/pip.log" 2>&1 \
    || log "install failed again: running from the source tree with PYTHONPATH"
fi
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

# Pure-Python dependencies that may be missing on the device (array-api-compat, tqdm, pytest):
# link them from a carried .venv when there is one (run(..., carry=[".venv/lib/python3.11/site-packages/<pkg>"]))
EXTRA="$(mktemp -d)"
for mod in array_api_compat tqdm pytest _pytest pluggy iniconfig; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    src=$(ls -d .venv/lib/python3*/site-packages/$mod 2>/dev/null | head -1)
    if [ -n "$src" ]; then ln -sfn "$(pwd)/$src" "$EXTRA/$mod"; log "using carried $mod"; else log "MISSING python module $mod"; fi
  fi
done
export PYTHONPATH="$PYTHONPATH:$EXTRA"

# -- 2. environment -----------------------------------------------------------------------------------
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'EOF'
import platform, numpy, scipy
print("python", platform.python_version(), "numpy", numpy.__version__, "scipy", scipy.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as e:
    print("cupy unavailable:", e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except Exception as e:
    print("torch unavailable:", e)
import array_api_compat, tqdm
print("array_api_compat", array_api_compat.__version__, "tqdm", tqdm.__version__)
EOF
} >"$OUT/env.txt" 2>&1
log "environment: $(head -3 "$OUT/env.txt" | tr '\n' ' ')"

if ! "$PY" -c "import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)" 2>>"$OUT/env.txt"; then
  log "NO usable CuPy + GPU here: the GPU tests below would only skip (see env.txt)"
  status=1
fi

# -- 3. GPU tests ---------------------------------------------------------------------------------------
log "GPU tests (pytest -m 'gpu and not slow and not llm')"
timeout 270 "$PY" -m pytest -q -m "gpu and not slow and not llm" -p no:cacheprovider \
  --junitxml="$OUT/gpu-tests.xml" -rs tests/ >"$OUT/gpu-tests.log" 2>&1
rc=$?
log "GPU tests exit $rc: $(tail -1 "$OUT/gpu-tests.log")"
[ $rc -eq 0 ] || status=1
grep -q " passed" "$OUT/gpu-tests.log" || { log "no GPU test passed"; status=1; }

# -- 4. benchmark -------------------------------------------------------------------------------------
log "ptq-bounds bench --device gpu"
timeout 240 "$PY" -c "import sys; from verify.cli import main; sys.exit(main(sys.argv[1:]))" \
  bench --device gpu --json "$OUT/bench_gpu.json" --no-progress >"$OUT/bench_gpu.log" 2>&1
rc=$?
log "bench exit $rc"
cat "$OUT/bench_gpu.log" | tee -a "$OUT/session.log" | tail -40
[ $rc -eq 0 ] || status=1

# -- 5. the generic loop on CuPy, for comparison --------------------------------------------------------
left=$(( 560 - ($(date +%s) - T0) ))
if [ $left -gt 30 ]; then
  log "generic array-API loop on CuPy (--kernel generic), 4096x4096, deterministic (limit ${left}s)"
  timeout $left "$PY" -c "import sys; from verify.cli import main; sys.exit(main(sys.argv[1:]))" \
    bench --device gpu --kernel generic --shapes 4096x4096 --cases deterministic --repeats 2 --warmup 0 --no-floor \
    --no-memory --mc-trials 0 --json "$OUT/bench_gpu_generic.json" --no-progress >"$OUT/bench_gpu_generic.log" 2>&1
  log "generic bench exit $?: $(grep -m1 'optq deterministic' "$OUT/bench_gpu_generic.log")"
else
  log "skipping the generic comparison (${left}s left)"
fi
log "done, status $status"
exit $status
