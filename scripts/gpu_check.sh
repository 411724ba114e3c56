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
#   seed_run     the seed run (d2l's AlexNet with d2l's settings, 0.885 test accuracy in d2l) through our kernels: python -m torch_model train --backend triton --amp bf16
#                --preset full (10 epochs, all 60000 images, the whole dataset resident on the GPU, test set
#                evaluated each epoch) --out OUTDIR/seed_run
# then a summary (OUTDIR/summary.txt, with the seed run's wall time and test accuracy) and OUTDIR/results/
# gpu_check.json (each step's status and seconds, and `seed_run`). Exit status 0 only when every step passed.
# Before anything runs, the four Fashion-MNIST files must be in FASHION_MNIST_DIR: else one line and exit 2.
#
# Made for the GPU machine as it is: no network, nothing installed, the preinstalled python3 with torch/triton
# (not the project's .venv), the checkout on PYTHONPATH. The dataset comes from FASHION_MNIST_DIR, by default the
# checkout's git-ignored data/fashion-mnist/.
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 460: the whole run, seconds),
# BENCH_LAYERS_ARGS / BENCH_TRAIN_ARGS / TRAIN_ARGS (flags for those steps), CODEGEN_JOBS. The bench defaults
# leave out torch.compile (max-autotune compiles take minutes: a tuning session sets BENCH_*_ARGS="" to include it).
set -u -o pipefail

DRY_RUN=0
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
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

# name | time cap in seconds | command (a string, run by bash -c). The caps of the foreground steps add up to the
# budget (20 + 130 + 80 + 60 + 170 = 460 s); codegen runs beside them. The seed run's estimate: ~3.5 PFLOP is ~10 s
# of bf16 tensor-core time, ~4700 steps x ~60 kernel launches x ~20 us of launch overhead ~6 s more, plus the
# first calls' compiles and autotuning (~40 kernel variants, ~1-2 s each, partly cached by the steps before) and
# ten test-set evaluations: ~1-2 minutes, capped at 170 s.
STEPS=(
    "info|20|nvidia-smi && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv && $PY -c 'import sys, torch, triton, numpy; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"numpy\", numpy.__version__, \"device\", torch.cuda.get_device_name())' && (git -C '$REPO' rev-parse HEAD 2>/dev/null || echo 'no git') && echo FASHION_MNIST_DIR=\$FASHION_MNIST_DIR && (ls -l \$FASHION_MNIST_DIR || true)"
    "codegen|240|$PY -m triton_kernels.codegen --jobs $CODEGEN_JOBS --json '$OUT/results/codegen_sm90.json'"
    "gpu_tests|130|$PY -m pytest -m gpu -p no:cacheprovider --continue-on-collection-errors -rs -q --durations=15 --junitxml '$OUT/gpu_tests.xml' tests/"
    "bench_layers|80|$PY -m torch_model bench layers --out-dir '$OUT/results' --no-progress ${BENCH_LAYERS_ARGS---impls triton,cudnn --rep-ms 50}"
    "bench_train|60|$PY -m torch_model bench train --out-dir '$OUT/results' --no-progress ${BENCH_TRAIN_ARGS---impls torch,triton,ddp}"
    "seed_run|170|$PY -m torch_model train --backend triton --amp bf16 --preset full --epochs 10 --out '$OUT/seed_run' --no-progress --no-checkpoint ${TRAIN_ARGS:-}"
)
BACKGROUND="codegen"  # runs beside the others (it only compiles, on the CPU); waited for before the summary

DATA_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
MISSING=()
for f in "${DATA_FILES[@]}"; do
    [[ -f "$FASHION_MNIST_DIR/$f.gz" || -f "$FASHION_MNIST_DIR/$f" ]] || MISSING+=("$f")
done

if (( DRY_RUN )); then
    echo "gpu_check dry run: OUTDIR=$OUT, budget ${BUDGET}s, PYTHON=$PY, PYTHONPATH=$PYTHONPATH"
    echo "FASHION_MNIST_DIR=$FASHION_MNIST_DIR"
    if (( ${#MISSING[@]} )); then echo "data: missing ${MISSING[*]} (a real run would stop here)"; else echo "data: the four files are there"; fi
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name cap cmd <<< "$step"
        where="foreground"; [[ " $BACKGROUND " == *" $name "* ]] && where="background"
        echo "step $name (cap ${cap}s, $where): $cmd > $OUT/$name.log"
    done
    exit 0
fi

if (( ${#MISSING[@]} )); then
    echo "gpu_check: FASHION_MNIST_DIR=$FASHION_MNIST_DIR lacks ${MISSING[*]} (.gz or raw): copy the four Fashion-MNIST files there (the GPU machine has no network); nothing run" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU here (nvidia-smi or torch.cuda.is_available() says no); nothing run" >&2
    exit 2
fi
mkdir -p "$OUT/results" || exit 2

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

# The seed run's numbers, from its metrics.csv (one row per epoch): epochs done, last test accuracy, training seconds.
SEED_EPOCHS=0 SEED_ACC=null SEED_TRAIN_S=null
if [[ -f "$OUT/seed_run/metrics.csv" ]]; then
    read -r SEED_EPOCHS SEED_ACC SEED_TRAIN_S < <(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { n++; acc = $col["test_acc"]; t += $col["train_seconds"] }
        END { if (n) printf "%d %.4f %.1f\n", n, acc, t; else print "0 null null" }' "$OUT/seed_run/metrics.csv")
fi

json_str() { printf '"%s"' "${1//\"/\\\"}"; }
{
    echo "{"
    echo "  \"date\": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)"), \"commit\": $(json_str "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"),"
    echo "  \"total_s\": $(( $(date +%s) - START )), \"budget_s\": $BUDGET,"
    echo "  \"steps\": {"
    sep=""
    for name in "${ORDER[@]}"; do
        printf '%s    %s: {"status": %s, "seconds": %s}' "$sep" "$(json_str "$name")" "$(json_str "${STATUS[$name]:-?}")" "${SECONDS_TAKEN[$name]:-null}"
        sep=$',\n'
    done
    echo; echo "  },"
    echo "  \"seed_run\": {\"backend\": \"triton\", \"amp\": \"bf16\", \"preset\": \"full\", \"epochs\": $SEED_EPOCHS, \"wall_s\": ${SECONDS_TAKEN[seed_run]:-null}, \"train_s\": $SEED_TRAIN_S, \"test_acc\": $SEED_ACC, \"status\": $(json_str "${STATUS[seed_run]:-?}")}"
    echo "}"
} > "$OUT/results/gpu_check.json"

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
    echo "seed run (triton, bf16 autocast, --preset full): ${SEED_EPOCHS} epoch(s), wall ${SECONDS_TAKEN[seed_run]:-?} s" \
         "(training ${SEED_TRAIN_S} s), test accuracy ${SEED_ACC}, status ${STATUS[seed_run]:-?} ($OUT/seed_run/metrics.csv)"
} | tee "$OUT/summary.txt"
# the pipe above runs in a subshell: recompute the verdict here
for name in "${ORDER[@]}"; do [[ "${STATUS[$name]:-?}" == ok ]] || FAILED=1; done
exit $FAILED
