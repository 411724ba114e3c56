#!/usr/bin/env bash
# The GPU check: everything that needs CUDA, in one run that finishes in under 8 minutes.
#
#   bash scripts/gpu_check.sh [--dry-run] OUTDIR
#
# Runs, each step under `timeout`, each step's output in OUTDIR/<step>.log, going on past a failed step:
#   info         nvidia-smi, python/torch/triton versions, git commit               -> OUTDIR/info.log
#   codegen      python -m triton_kernels.codegen (every sm_90 spec; in the background, CPU only, beside the tests)
#   gpu_tests    pytest -m gpu over tests/ (the tests marked `gpu`)                 -> OUTDIR/gpu_tests.xml
#   bench_layers python -m torch_model bench layers --out-dir OUTDIR/results
#   bench_train  python -m torch_model bench train --out-dir OUTDIR/results
#   train        python -m torch_model train --backend triton --epochs 1 --out OUTDIR/train
# then a summary (OUTDIR/summary.txt). Exit status 0 only when every step passed.
#
# Made for the GPU machine as it is: no network, nothing installed, the preinstalled python3 with torch/triton
# (not the project's .venv), the checkout on PYTHONPATH. The dataset comes from FASHION_MNIST_DIR, by default the
# checkout's git-ignored data/fashion-mnist/.
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 460: the whole run, seconds),
# BENCH_LAYERS_ARGS / BENCH_TRAIN_ARGS / TRAIN_ARGS (flags for those steps), CODEGEN_JOBS. The bench defaults
# leave out torch.compile (max-autotune compiles take minutes: a tuning session sets BENCH_*_ARGS="" to include it).
set -u -o pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: bash scripts/gpu_check.sh [--dry-run] OUTDIR" >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$1"; [[ "$OUT" == /* ]] || OUT="$PWD/$OUT"  # absolute: the steps run from the checkout
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-460}"  # 8 minutes minus the time `timeout -k` may add to a killed step
KILL_AFTER=5
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export FASHION_MNIST_DIR="${FASHION_MNIST_DIR:-$REPO/data/fashion-mnist}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # compiled kernels on the GPU, never the interpreter
cd "$REPO" || exit 2

CODEGEN_JOBS="${CODEGEN_JOBS:-$(( $(nproc 2>/dev/null || echo 4) > 2 ? $(nproc 2>/dev/null || echo 4) - 2 : 1 ))}"

# name | time cap in seconds | command (a string, run by bash -c)
STEPS=(
    "info|20|nvidia-smi && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv && $PY -c 'import sys, torch, triton, numpy; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"numpy\", numpy.__version__, \"device\", torch.cuda.get_device_name())' && (git -C '$REPO' rev-parse HEAD 2>/dev/null || echo 'no git') && echo FASHION_MNIST_DIR=\$FASHION_MNIST_DIR && (ls -l \$FASHION_MNIST_DIR || true)"
    "codegen|240|$PY -m triton_kernels.codegen --jobs $CODEGEN_JOBS --json '$OUT/results/codegen_sm90.json'"
    "gpu_tests|170|$PY -m pytest -m gpu -p no:cacheprovider --continue-on-collection-errors -rs -q --durations=15 --junitxml '$OUT/gpu_tests.xml' tests/"
    "bench_layers|100|$PY -m torch_model bench layers --out-dir '$OUT/results' --no-progress ${BENCH_LAYERS_ARGS---impls triton,cudnn --rep-ms 50}"
    "bench_train|70|$PY -m torch_model bench train --out-dir '$OUT/results' --no-progress ${BENCH_TRAIN_ARGS---backends torch,triton}"
    "train|100|$PY -m torch_model train --backend triton --epochs 1 --out '$OUT/train' --no-progress ${TRAIN_ARGS:-}"
)
BACKGROUND="codegen"  # runs beside the others (it only compiles, on the CPU); waited for before the summary

if (( DRY_RUN )); then
    echo "gpu_check dry run: OUTDIR=$OUT, budget ${BUDGET}s, PYTHON=$PY, PYTHONPATH=$PYTHONPATH"
    echo "FASHION_MNIST_DIR=$FASHION_MNIST_DIR"
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name cap cmd <<< "$step"
        where="foreground"; [[ " $BACKGROUND " == *" $name "* ]] && where="background"
        echo "step $name (cap ${cap}s, $where): $cmd > $OUT/$name.log"
    done
    exit 0
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU here (nvidia-smi or torch.cuda.is_available() says no); nothing run" >&2
    exit 2
fi
mkdir -p "$OUT/results" || exit 2
[[ -d "$FASHION_MNIST_DIR" ]] || echo "gpu_check: warning: FASHION_MNIST_DIR=$FASHION_MNIST_DIR is not a folder" >&2

START=$(date +%s)
declare -A STATUS SECONDS_TAKEN PID_OF STARTED_AT

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

status_of() {  # exit code -> word
    case "$1" in
        0) echo ok ;;
        124|137) echo TIMEOUT ;;
        *) echo "FAILED(rc=$1)" ;;
    esac
}

run_step() {  # name cap cmd [background]
    local name="$1" cap="$2" cmd="$3" bg="${4:-0}" left t
    left=$(remaining)
    t=$(( cap < left ? cap : left ))
    if (( t < 10 )); then
        STATUS[$name]="SKIPPED(no time left)"; SECONDS_TAKEN[$name]=0
        echo "== $name: skipped, ${left}s of the budget left" | tee "$OUT/$name.log"
        return
    fi
    echo "== $name (timeout ${t}s): $cmd"
    STARTED_AT[$name]=$(date +%s)
    if (( bg )); then
        timeout -k "$KILL_AFTER" "$t" bash -c "$cmd" > "$OUT/$name.log" 2>&1 &
        PID_OF[$name]=$!
        return
    fi
    timeout -k "$KILL_AFTER" "$t" bash -c "$cmd" > "$OUT/$name.log" 2>&1
    local rc=$?
    SECONDS_TAKEN[$name]=$(( $(date +%s) - STARTED_AT[$name] ))
    STATUS[$name]=$(status_of "$rc")
    echo "   $name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s (log: $OUT/$name.log)"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

ORDER=()
for step in "${STEPS[@]}"; do
    IFS='|' read -r name cap cmd <<< "$step"
    ORDER+=("$name")
    if [[ " $BACKGROUND " == *" $name "* ]]; then run_step "$name" "$cap" "$cmd" 1; else run_step "$name" "$cap" "$cmd"; fi
done
for name in "${!PID_OF[@]}"; do
    wait "${PID_OF[$name]}"
    rc=$?
    SECONDS_TAKEN[$name]=$(( $(date +%s) - STARTED_AT[$name] ))
    STATUS[$name]=$(status_of "$rc")
    echo "   $name (background): ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s (log: $OUT/$name.log)"
done

FAILED=0
{
    echo "gpu_check summary: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(( $(date +%s) - START ))s in all, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    printf '%-14s %-24s %6s  %s\n' step status seconds log
    for name in "${ORDER[@]}"; do
        printf '%-14s %-24s %6s  %s\n' "$name" "${STATUS[$name]:-?}" "${SECONDS_TAKEN[$name]:-?}" "$OUT/$name.log"
        [[ "${STATUS[$name]:-?}" == ok ]] || FAILED=1
    done
    if [[ -f "$OUT/gpu_tests.log" ]]; then
        echo; echo "gpu tests: $(grep -E '[0-9]+ (passed|failed|error)' "$OUT/gpu_tests.log" | tail -n 1)"
    fi
} | tee "$OUT/summary.txt"
# the pipe above runs in a subshell: recompute the verdict here
for name in "${ORDER[@]}"; do [[ "${STATUS[$name]:-?}" == ok ]] || FAILED=1; done
exit $FAILED
