#!/usr/bin/env bash
# Build the pinned virtual environments in which the field audit runs third-party GPTQ/Qronos
# implementations (each library pins its own torch; they cannot share one environment).
#
#   bash benchmarks/field_audit_envs.sh NAME|all      # NAME: llmcompressor gptqmodel amd-quark auto-gptq
#   python -m verify.field_audit                      # then audits every adapter, each in its environment
#
# Environments go to $PTQ_ENVS/<PyPI name> (default /work/envs), the path verify.field_audit looks in.
# torch is the CPU build where the library accepts it (PyPI's default Linux wheels pull several GB
# of CUDA libraries). Each environment gets this checkout (pip install -e --no-deps) and the
# package's core dependencies. Same as `python -m verify.field_audit --setup NAME|all`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVS="${PTQ_ENVS:-/work/envs}"
PY="${PYTHON:-python3.11}"
CORE=(numpy scipy sympy matplotlib array-api-compat tqdm hypothesis threadpoolctl pytest)

build() {
  local name="$1"; shift
  local dir="$ENVS/$name"
  local t0=$SECONDS
  echo "== $name -> $dir"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$@"
  "$dir/bin/python" -m pip install -q "${CORE[@]}"
  "$dir/bin/python" -m pip install -q --no-deps -e "$ROOT"
  "$dir/bin/python" -m pip freeze > "$dir/freeze.txt"
  echo "== $name built in $((SECONDS - t0)) s, $(du -sh "$dir" | cut -f1)"
}

pip_in() { local name="$1"; shift; "$ENVS/$name/bin/python" -m pip install -q "$@"; }

env_llmcompressor() {
  # llmcompressor 0.14.0.1: torch>=2.10,<=2.14.0 -> the CPU build of 2.13.0
  build llmcompressor pip_in llmcompressor "torch==2.13.0" "llmcompressor==0.14.0.1"
}

env_gptqmodel() {
  # gptqmodel 7.7.0: torch>=2.14.1 -> 2.14.1 (no CPU-only build of it on PyPI: the default Linux wheel,
  # with its CUDA libraries, several GB)
  build gptqmodel pip_in gptqmodel "torch==2.14.1" "gptqmodel==7.7.0"
}

env_amd_quark() {
  # amd-quark 0.13 names no torch requirement (the user brings one): the CPU build of 2.13.0
  # quark.torch imports transformers without declaring it
  build amd-quark pip_in amd-quark "torch==2.13.0" "amd-quark==0.13" "transformers==5.17.0"
}

env_auto_gptq() {
  # auto-gptq 0.7.1: torch>=1.13 (its compiled kernels are optional: BUILD_CUDA_EXT=0; the GPTQ loop is
  # plain torch). It imports transformers.modeling_utils.no_init_weights, gone from transformers 5:
  # transformers and its companions are pinned to their 2024 releases.
  BUILD_CUDA_EXT=0 build auto-gptq pip_in auto-gptq "torch==2.13.0" "auto-gptq==0.7.1" "transformers==4.40.2" \
    "datasets==2.19.1" "peft==0.10.0" "accelerate==0.30.1"
}

case "${1:-}" in
  llmcompressor) env_llmcompressor ;;
  gptqmodel) env_gptqmodel ;;
  amd-quark) env_amd_quark ;;
  auto-gptq) env_auto_gptq ;;
  all) env_llmcompressor; env_gptqmodel; env_amd_quark; env_auto_gptq ;;
  *) echo "usage: $0 llmcompressor|gptqmodel|amd-quark|auto-gptq|all" >&2; exit 2 ;;
esac
