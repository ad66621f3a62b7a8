#!/usr/bin/env bash
# What one lent GPU session runs, in one go, from the repository root of the GPU box (the device
# tool's machine: one H100, 16 cores, JAX and CuPy, no TensorFlow): Keras 3 on the JAX backend.
#
#   OUT=DIR bash benchmarks/gpu_session.sh            # BUDGET=570 seconds in all by default
#
# Needs, prepared here first (both are git-ignored):
#   .whl/      keras, namex, optree, pydicom wheels for the box's Python (README "On a lent GPU")
#   .gpu/pack.npz   python -m ml dataset --pack .gpu/pack.npz --splits train val
#
# Steps, each under its own time limit, each logged to $OUT/log.txt, so a slow step costs the
# later ones time but never the figures already taken:
#   1. the GPU tests (gpu_ops' CuPy kernels, the simulators on CuPy) beside the data build;
#   2. a fresh training set from the pack (train + val splits only: the test brains stay here);
#   3. full-model training on whole slices at working size 256 until the time left for the rest;
#   4. pruning to 25 % of the parameters (energy-aware order, lottery-ticket rewinding);
#   5. the GPU scoring benchmark (32-slice 384x512 series, batch 32) of the new and the shipped
#      models, and the simulator benchmark (NumPy vs CuPy).
# Everything the evaluation here needs comes back in $OUT (at most 8 files): the models without
# optimizer state, history, curve, log (the rewind weights too when they fit the 16 MiB a file).
#
# What the first such session (2026-11-27, H100, 16 slow cores) measured, and what changed since:
# the data build ran at 42 slices/s on 15 workers (the parent deflated every shard on one thread;
# shards are now written on threads), so 16,000 slices took 377 s and left no time to train; the
# training itself ran 20 steps/s at batch 32 (base 16, working size 256: 640 slices/s) once XLA
# had compiled the five working shapes (~80 s per process; the compilation cache below now keeps
# them across processes); the GPU tests needed pytest-django (now run without the conftest).
set -u
OUT=${OUT:-/tmp/gpu-session}
BUDGET=${BUDGET:-570}
SLICES=${SLICES:-8000}
BASE=${BASE:-16}
BATCH=${BATCH:-32}
STEPS=${STEPS:-100}
EPOCHS=${EPOCHS:-60}
PRUNE_EPOCHS=${PRUNE_EPOCHS:-4}
PRUNE_FINAL=${PRUNE_FINAL:-8}
RESERVE_PRUNE=${RESERVE_PRUNE:-140}
RESERVE_BENCH=${RESERVE_BENCH:-75}
CORES=$(nproc)
# The shards and the resampled split (~1.3 MB a slice together) go to memory when it holds them.
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
# XLA's compiled steps kept across processes (train, then a resumed train, the benchmarks).
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

# 1 + 2: the data build on all cores but one, the GPU tests beside it.
say "dataset: start ($SLICES slices, seed 2, train + val)"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    $PY -m ml dataset --out "$WORK/data" --slices "$SLICES" --seed 2 --workers $((CORES - 1)) \
    --splits train val --sources .gpu/pack.npz --quiet >"$WORK/dataset.log" 2>&1 &
DATA=$!
# No Django here: the suite's conftest (pytest-django fixtures) is left out; these tests need none.
step 90 "gpu tests" $PY -m pytest -q -c /dev/null --rootdir . -p no:cacheprovider -p no:django \
    --noconftest tests/gpu_ops tests/ml/test_simulate_physics.py
wait $DATA
cat "$WORK/dataset.log" >>"$LOG"
say "dataset: done"

# 3: full model, whole slices at working size 256, until the pruning and benchmarks' reserve.
RUN=$WORK/run
budget=$(($(left) - RESERVE_PRUNE - RESERVE_BENCH))
step $((budget + 40)) "train" $PY -m ml train --data "$WORK/data" --out "$RUN" --working 256 \
    --base "$BASE" --batch "$BATCH" --steps "$STEPS" --epochs "$EPOCHS" --time-budget "$budget" \
    --lr 2e-3 --balance --seed 0 --rewind-epoch 1 --workers $((CORES - 2)) --quiet
cat "$RUN/history.csv" >>"$LOG" 2>/dev/null
cp "$RUN/history.csv" "$OUT/full-history.csv" 2>/dev/null
cp "$RUN/curve.png" "$OUT/full-curve.png" 2>/dev/null
cp "$RUN/rewind.weights.h5" "$OUT/full-rewind.weights.h5" 2>/dev/null
# The last completed epoch is what comes back (the choice between checkpoints is made here, on
# the validation brain, after the run); without optimizer state it fits the 16 MiB a file.
if [ -f "$RUN/last.keras" ]; then
    cp "$RUN/last.keras" "$RUN/best.keras"  # prune ranks the channels of the model it ships from
    $PY -c "import sys; from ml.model import network; print(network.save_for_serving(sys.argv[1], sys.argv[2]))" \
        "$RUN/last.keras" "$OUT/full.keras" >>"$LOG" 2>&1
fi

# 4: pruning, under what is left before the benchmarks.
if [ -f "$RUN/best.keras" ] && [ -f "$RUN/rewind.weights.h5" ]; then
    budget=$(($(left) - RESERVE_BENCH))
    step $((budget + 30)) "prune" $PY -m ml prune "$RUN" --to 0.25 --rounds 2 \
        --epochs "$PRUNE_EPOCHS" --final-epochs "$PRUNE_FINAL" --time-budget $((budget - 20)) --quiet
    cp "$RUN/pruned/prune.json" "$OUT/prune.json" 2>/dev/null
    if [ -f "$RUN/pruned/best.keras" ]; then
        cp "$RUN/pruned/best.keras" "$OUT/pruned.keras"
    else  # cut short: the last finished epoch of the last round that ran
        last=$(ls -d "$RUN"/pruned/round*/ 2>/dev/null | sort | tail -1)
        [ -n "$last" ] && [ -f "$last/last.keras" ] && $PY -c \
            "import sys; from ml.model import network; network.save_for_serving(sys.argv[1], sys.argv[2])" \
            "$last/last.keras" "$OUT/pruned-$(basename "$last").keras" >>"$LOG" 2>&1
    fi
fi

# 5: GPU scoring figures: the new models (as trained, before modes and thresholds are tuned,
# which costs the same) and the shipped ones, then the simulators on CuPy.
models=()
[ -f "$OUT/full.keras" ] && models+=("$OUT/full.keras")
[ -f "$OUT/pruned.keras" ] && models+=("$OUT/pruned.keras")
[ ${#models[@]} -gt 0 ] && step $(($(left) - 40)) "gpu score (new)" $PY benchmarks/gpu_score.py \
    --batch 32 --repeat 5 --models "${models[@]}"
step $(($(left) - 25)) "simulate" $PY benchmarks/simulate.py --batch 32 --repeats 2
step $(($(left) - 2)) "gpu score (shipped)" $PY benchmarks/gpu_score.py --batch 32 --repeat 5 \
    --models pruned full
say "done"
