#!/usr/bin/env bash
# Train one system on a lent GPU within a wall-clock budget, resumable across machines (#16,
# DESIGN §15). One `device` run call; it installs nothing (the image has torch, numpy,
# safetensors, tqdm: the training path imports no openmm or mdtraj).
#
# Here, before the call (git-ignored devcarry/ travels with `carry`):
#   arbg train --data data/ala2_t300 --split 0.95,0.05,0 --save-data devcarry/ala2.npz --pack
#   (after an earlier lease: python -m arbg_core.lease unpack FILES_AT devcarry/run_ala2)
# On the device (carry: ["devcarry"]):
#   DATA=devcarry/ala2.npz RUN=devcarry/run_ala2 BUDGET_S=420 scripts/device_train.sh
# Back here: python -m arbg_core.lease unpack FILES_AT devcarry/run_ala2, then
#   arbg ship --checkpoint devcarry/run_ala2/best ... (or the next lease resumes it).
#
# A run folder with a state/ resumes (the schedule, STEPS in all, was fixed by its first lease);
# otherwise it starts. Training stops cleanly BUDGET_S seconds in (a timeout BUDGET_S + 120 s
# is the backstop), then $OUT receives the state shards, run.tar (JSON, log) and best/'s
# weights when they differ from the state's: at most 8 files of 16 MiB (arbg_core/lease.py).
# Defaults: `base` (the paper's 256 x 8) with 4,096 bins (the paper's alanine-dipeptide config),
# Muon (the paper's optimizer), 4,096 frames a step (the paper: 512; 8x for a compute-bound step
# on an H200), 6,000 steps = 1.5 billion tokens of alanine dipeptide (the issue's floor: 1e9).
# BENCH=1 first measures `arbg bench train` (results in the run folder's train_cuda.json).
# The CPU fallback (#16: no GPU lent) is the same command in the background here, e.g.
#   DEVICE=cpu SIZE=small BINS=1024 BATCH=256 STEPS=2500 WARMUP=150 VAL_EVERY=250 SAVE_EVERY=50 \
#   LOG_EVERY=50 MOMENTS=fp32 DATA=devcarry/aaa.npz RUN=runs/cpu_aaa OUT=runs/cpu_aaa.out \
#   BUDGET_S=3600 OMP_NUM_THREADS=1 nohup scripts/device_train.sh &
# and each rerun continues the run (a lent GPU can take over the same folder, unpacked).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
: "${DATA:?set DATA to a packed dataset (arbg train ... --save-data FILE --pack)}"
: "${RUN:?set RUN to the run folder (new, or one unpacked from an earlier lease)}"
: "${OUT:?set OUT to the folder that comes back}"
BUDGET_S=${BUDGET_S:-420}
DEVICE=${DEVICE:-cuda}
ARBG=("$PY" -c "import sys; from arbg_core.cli import main; sys.exit(main())")
mkdir -p "$RUN" "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi -L || true
t0=$(date +%s)
if [ "${BENCH:-0}" = 1 ]; then
  "$PY" -m arbg_core.bench.train --out "$RUN" --sizes "${BENCH_SIZES:-small,base}" \
    --device "$DEVICE" 2>&1 | tail -n 5
fi
spent=$(( $(date +%s) - t0 ))
left=$(( BUDGET_S - spent ))
if [ -f "$RUN/state/state.json" ]; then
  resume=(--resume); echo "resuming $RUN"
else
  resume=(); echo "starting $RUN"
fi
set +e
timeout $(( left + 120 )) "${ARBG[@]}" train --data "$DATA" --out "$RUN" "${resume[@]}" \
  --size "${SIZE:-base}" --bins "${BINS:-4096}" --frame "${FRAME:-body}" \
  --optimizer "${OPTIMIZER:-muon}" --lr "${LR:-2e-3}" --steps "${STEPS:-6000}" \
  --batch-size "${BATCH:-4096}" --warmup-steps "${WARMUP:-500}" --seed "${SEED:-0}" \
  --val-every "${VAL_EVERY:-1000}" --save-every "${SAVE_EVERY:-500}" \
  --log-every "${LOG_EVERY:-100}" --moments "${MOMENTS:-bf16}" \
  --budget-s "$left" --device "$DEVICE" > "$RUN/train.log" 2> "$RUN/train.err"
rc=$?
set -e
tr '\r' '\n' < "$RUN/train.err" | tail -n 5 >> "$RUN/train.log"
echo "train exit $rc"; tail -n 8 "$RUN/train.log"
"$PY" -m arbg_core.lease pack "$RUN" "$OUT"
exit $rc
