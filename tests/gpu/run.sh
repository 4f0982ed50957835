#!/usr/bin/env bash
# The GPU check (docs/architecture.md, "GPU check"), one command on a machine with a CUDA GPU:
#
#   bash tests/gpu/run.sh
#
# 1. builds and installs zcoll (CUDA kernels on) against the torch already installed here: never
#    replaces torch; installs scikit-build-core, cmake, ninja, numpy, pytest, pytest-timeout and
#    hypothesis if missing (offline: point PIP_FIND_LINKS at a folder of their wheels);
# 2. runs tests/gpu/test_gpu.py: every collective on CUDA tensors equal to CPU tensors bit for
#    bit, the compressed collectives on the GPU equal to zcoll.reference, DDP on a CUDA model,
#    completion not waiting for the caller's later compute (2 and 4 ranks sharing the GPUs);
# 3. prints all_reduce bus bandwidth (zcoll-bench --device cuda): zcoll on the GPU(s), zcoll on
#    the CPU for comparison, and NCCL where it can run (one rank per GPU: needs 2 or more GPUs).
#
# Progress and results print as they come; about 5-8 minutes on one H100 with 16 cores. With OUT
# set, the summary (gpu-check-summary.txt) and the logs are written there as the run goes (a
# run killed midway leaves what it had). Environment:
# PYTHON (default: python3, else python), GPU_CHECK_SKIP_BUILD=1 (test the zcoll installed now).
# Exit status: 0 when the build and every test passed (bandwidth runs are informative only).
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-$(command -v python3 || command -v python)}
if [ -n "${OUT:-}" ]; then LOGS=$OUT; mkdir -p "$LOGS"; else LOGS=$(mktemp -d "${TMPDIR:-/tmp}/zcoll-gpu-check.XXXXXX"); fi
SUMMARY=$LOGS/gpu-check-summary.txt
START=$SECONDS
status=0

say() { echo "== [+$((SECONDS - START))s] $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
finish() {
  local rc=$?
  [ "$rc" -ne 0 ] && status=$rc  # an unexpected failure (set -e) counts too
  note "result: $([ "$status" -eq 0 ] && echo PASSED || echo FAILED) after $((SECONDS - START)) s"
  echo "== summary ($SUMMARY; logs beside it):"
  cat "$SUMMARY"
}
trap finish EXIT

note "zcoll GPU check, $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

say "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' \
  | tee -a "$SUMMARY" || note "gpu: nvidia-smi not found"
"$PY" - <<'EOF' | tee -a "$SUMMARY"
import torch, torch.distributed as dist
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}, "
      f"GPUs: {torch.cuda.device_count()}, nccl: {dist.is_nccl_available()}")
EOF
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  note "no CUDA device visible to torch: nothing to check"
  status=1
  exit 1
fi
note "nvcc: $(command -v nvcc || echo 'not on PATH') $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || true)"

if [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
  say "build tools"
  # Only what is missing, and with torch pinned to the installed version: pip never replaces it.
  missing=$("$PY" - <<'EOF'
import importlib.util, shutil
need = {"scikit_build_core": "scikit-build-core", "numpy": "numpy", "pytest": "pytest",
        "pytest_timeout": "pytest-timeout", "hypothesis": "hypothesis"}
out = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
out += [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None and importlib.util.find_spec(tool) is None]
print(" ".join(out))
EOF
)
  if [ -n "$missing" ]; then
    say "installing $missing"
    constraint=$LOGS/torch-constraint.txt
    "$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$constraint"
    if ! "$PY" -m pip install -q -c "$constraint" $missing 2>&1 | tee "$LOGS/pip-tools.log"; then
      note "build tools: pip could not install $missing (offline? set PIP_FIND_LINKS to a folder of wheels)"
      status=1
      exit 1
    fi
  fi
  command -v nvcc >/dev/null || for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    [ -x "$d/nvcc" ] && { export PATH="$d:$PATH"; break; }
  done
  if ! command -v nvcc >/dev/null; then
    note "build: no nvcc (CUDA toolkit) here; a zcoll without its CUDA kernels refuses CUDA tensors"
    status=1
    exit 1
  fi
  # The kernels for sm_80 and sm_90 (CMakeLists.txt's default) and for this machine's GPUs.
  archs=$("$PY" -c 'import torch; cc = {80, 90} | {10 * a + b for a, b in (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))}; print(";".join(map(str, sorted(cc))))')
  say "building zcoll (ZCOLL_CUDA=on, archs $archs, $(nproc) jobs; log: $LOGS/build.log)"
  # --no-deps: nothing is installed beside zcoll, whatever torch this machine holds (pyproject's
  # range, torch>=2.11,<2.16, is what zcoll is known to compile against; a torch outside it may
  # still build, and this check would say so).
  if ZCOLL_CUDA=on CMAKE_ARGS="-DZCOLL_CUDA_ARCHS=$archs" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) timeout -k 10 360 \
      "$PY" -m pip install -v --no-deps --no-build-isolation . > "$LOGS/build.log" 2>&1; then
    note "build: ok in $((SECONDS - START)) s"
  else
    tail -40 "$LOGS/build.log"
    note "build: FAILED (see build.log)"
    status=1
    exit 1
  fi
fi
"$PY" - <<'EOF' | tee -a "$SUMMARY"
import zcoll
i = zcoll.build_info()
print(f"zcoll {i['version']}: built against torch {i['torch_version']}, CUDA kernels {i['cuda']} "
      f"(CUDA {i['cuda_version']}, archs {i['cuda_archs']})")
EOF

say "tests: tests/gpu/test_gpu.py (log: $LOGS/pytest.log)"
# The per-test timeouts kill their ranks; this one bounds the whole run.
if timeout -k 10 360 "$PY" -m pytest tests/gpu/test_gpu.py -v -rA -p no:cacheprovider --timeout=300 \
    2>&1 | tee "$LOGS/pytest.log"; then
  note "tests: $(tail -1 "$LOGS/pytest.log" | tr -d '=' | sed 's/^ *//')"
else
  note "tests: FAILED: $(tail -1 "$LOGS/pytest.log" | tr -d '=' | sed 's/^ *//')"
  grep -E '^(FAILED|ERROR)' "$LOGS/pytest.log" | sed 's/^/  /' | tee -a "$SUMMARY" || true
  status=1
fi

bench() {  # bench NAME SECONDS ARGS...: zcoll-bench, its table kept in the summary
  local name=$1 limit=$2
  shift 2
  say "bandwidth: $name"
  if timeout -k 10 "$limit" "$PY" -m zcoll.bench all_reduce -b 1M -e 64M -f 4 -n 10 -w 3 -c 1 "$@" \
      2>&1 | tee "$LOGS/bench-$name.log"; then
    note "bandwidth, $name (zcoll-bench all_reduce $*):"
    grep -vE '^#  Rank|^$' "$LOGS/bench-$name.log" | sed 's/^/  /' >> "$SUMMARY"
  else
    note "bandwidth, $name: FAILED or timed out (see bench-$name.log)"
  fi
}
gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
bench zcoll-cuda-2ranks 120 --nproc 2 --device cuda
bench zcoll-cpu-2ranks 60 --nproc 2 --device cpu
if "$PY" -c 'import sys, torch.distributed as d; sys.exit(0 if d.is_nccl_available() else 1)'; then
  if [ "$gpus" -ge 2 ]; then
    bench "zcoll-vs-nccl-${gpus}ranks" 120 --nproc "$gpus" --device cuda --backend zcoll,nccl
  else
    note "bandwidth, nccl: not run: NCCL needs a GPU per rank, and a 1-rank all_reduce has no bus bandwidth" \
         "(busbw = algbw x 2(n-1)/n = 0); this machine has $gpus GPU"
  fi
else
  note "bandwidth, nccl: not run: this torch has no NCCL"
fi
exit "$status"
