#!/usr/bin/env bash
# What one lent GPU session runs, in one go, from the repository root of the GPU box (the device
# tool's machine: one H100 or H200, 16 cores, JAX and CuPy, no TensorFlow): Keras 3 on JAX.
#
#   OUT=DIR bash benchmarks/gpu_session.sh            # BUDGET=555 seconds in all by default
#
# Needs, prepared here first (both are git-ignored):
#   .whl/      keras, namex, optree, pydicom wheels for the box's Python (README "On a lent GPU")
#   .gpu/pack.npz   python -m ml dataset --pack .gpu/pack.npz --splits train val
#
# Steps, each under its own time limit, logged to $OUT/log.txt, so a slow step costs the later
# ones time but never the figures already taken:
#   1. a fresh training set from the pack (train + val splits only: the test brains stay here) on
#      all cores but three; beside it, one after the other on those three, the GPU scoring
#      benchmark of the shipped models (32-slice 384x512 series, batch 32, with a profile of one
#      warm run), the GPU tests (gpu_ops' CuPy kernels, the simulators on CuPy) and the
#      simulator benchmark (NumPy vs CuPy);
#   2. the trainings of RUNS at once on the one GPU, until the time left for the saves: FT
#      fine-tunes FT_INIT (the shipped full model: its architecture, base 8) at batch 32; FS
#      trains a base-16 network from scratch (the first from-scratch run with round 5's mask
#      loss); the cores but two assemble their batches, shared between them;
#   3. each run's last and best epoch without optimizer state, and its curve.
# Everything the evaluation here needs comes back in $OUT (at most 8 files). The choice between
# the runs and their epochs, the tuning of modes and thresholds and any pruning happen here, on
# the validation brain, after the session (ml/MODEL_CARD.md, "The second GPU session").
#
# The first such session (2026-11-27, H100, 16 slow cores): the data build ran at 42 slices/s on
# 15 workers (the parent deflated every shard on one thread; shards are now written on threads),
# so 16,000 slices took 377 s and left no time to train. Pruning on the box is left out since:
# each pruning round compiles its thinner network again, and round 16 pruned on this machine's
# CPU in 21 minutes. The second (2026-11-30, H200): 7,000 slices in 77 s on 13 workers; the
# first epoch of a run, 150-210 s, was mostly XLA compiling (training, validation and prediction
# steps for five working shapes), after which a base-8 step at batch 32 took 0.037 s; the time
# budget then cut every run to that one epoch (fixed: ml.model.train._epoch_pace).
set -u
OUT=${OUT:-/tmp/gpu-session}
BUDGET=${BUDGET:-555}
SLICES=${SLICES:-7000}
BATCH=${BATCH:-32}
STEPS=${STEPS:-400}
FT_LR=${FT_LR:-8e-4}
FT_INIT=${FT_INIT:-ml/weights/artiscan-full.keras}
RUNS=${RUNS:-fs}  # the trainings, at once: ft, fs or "ft fs" (two share the GPU: each ran slower)
FS_BASE=${FS_BASE:-16}
FS_LR=${FS_LR:-2e-3}
RESERVE_SAVE=${RESERVE_SAVE:-35}
CORES=$(nproc)
BUILDERS=$((CORES > 4 ? CORES - 3 : 1))
# The shards and the resampled splits go to memory when it holds them.
shm_gb=$(df -BG --output=avail /dev/shm 2>/dev/null | tail -1 | tr -dc 0-9)
if [ -z "${WORK:-}" ] && [ "${shm_gb:-0}" -gt $((SLICES * 3 / 1000)) ]; then WORK=/dev/shm/artiscan-gpu; fi
WORK=${WORK:-/tmp/artiscan-gpu}
mkdir -p "$OUT" "$WORK"
LOG=$OUT/log.txt
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }
step() {  # step SECONDS NAME COMMAND...: run under a time limit, output to the log
    local limit=$1 name=$2
    shift 2
    if [ "$limit" -le 5 ]; then say "$name: skipped (no time left)"; return 1; fi
    say "$name: start (limit ${limit} s)"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: exit $rc"
    return $rc
}

export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
# XLA's compiled steps kept across processes.
export JAX_COMPILATION_CACHE_DIR=$WORK/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export PYTHONPATH=$PWD
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$WHEELS"/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=$WORK/site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc; free -g; echo "work: $WORK"; df -h "$WORK"; } >>"$LOG"
$PY -c "import keras, jax; print('keras', keras.__version__, keras.backend.backend(), jax.devices())" >>"$LOG" 2>&1

# 1: the data build on all cores but three; the GPU tests and benchmarks beside it.
say "dataset: start ($SLICES slices, seed 17, train + val, $BUILDERS workers)"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    $PY -m ml dataset --out "$WORK/data" --slices "$SLICES" --seed 17 --workers "$BUILDERS" \
    --splits train val --sources .gpu/pack.npz --quiet >"$WORK/dataset.log" 2>&1 &
DATA=$!
(
    # No Django here: the suite's conftest (pytest-django fixtures) is left out; these need none.
    # The scoring figures first, while the GPU has nothing else to do.
    step 150 "gpu score (shipped)" $PY benchmarks/gpu_score.py --batch 32 --repeat 5 --profile \
        --second-process --models pruned full
    step 80 "gpu tests" $PY -m pytest -q -c /dev/null --rootdir . -p no:cacheprovider \
        -p no:django --noconftest tests/gpu_ops tests/ml/test_simulate_physics.py
    step 40 "simulate" $PY benchmarks/simulate.py --batch 32 --repeats 2
) &
SIDE=$!
wait $DATA
cat "$WORK/dataset.log" >>"$LOG"
say "dataset: done"

# 2: two trainings at once until the saves' reserve (each --time-budget includes its loading).
budget=$(($(left) - RESERVE_SAVE))
train() {  # train NAME ARGS...: one run into $WORK/NAME, its own log
    local name=$1
    shift
    say "$name: start (budget ${budget} s)"
    timeout --signal=INT --kill-after=10 $((budget + 20)) $PY -m ml train --data "$WORK/data" \
        --out "$WORK/$name" --working 256 --batch "$BATCH" --steps "$STEPS" --epochs 400 \
        --time-budget "$budget" --balance --quiet "$@" >"$WORK/$name.log" 2>&1
    say "$name: exit $?"
}
count=$(echo $RUNS | wc -w)
threads=$(((CORES - 2) / count))
pids=()
for name in $RUNS; do
    case $name in
        ft) train ft --init "$FT_INIT" --lr "$FT_LR" --seed 17 --workers "$threads" & ;;
        fs) train fs --base "$FS_BASE" --lr "$FS_LR" --seed 0 --workers "$threads" & ;;
        *) say "unknown run $name" ;;
    esac
    pids+=($!)
done
wait "${pids[@]}" $SIDE

# 3: what comes back: each run's last and best epoch without optimizer state, its curve.
for name in $RUNS; do
    { echo "== $name"; tail -5 "$WORK/$name.log"; cat "$WORK/$name/history.csv"; } >>"$LOG" 2>&1
    cp "$WORK/$name/curve.png" "$OUT/$name-curve.png" 2>/dev/null
    for kind in last best; do
        [ -f "$WORK/$name/$kind.keras" ] && $PY -c \
            "import sys; from ml.model import network; print(network.save_for_serving(sys.argv[1], sys.argv[2]))" \
            "$WORK/$name/$kind.keras" "$OUT/$name-$kind.keras" >>"$LOG" 2>&1
    done
done
nvidia-smi --query-gpu=memory.used --format=csv >>"$LOG" 2>&1
say "done"
