#!/usr/bin/env bash
# Train the transferable dipeptide model (#8) on one GPU within a fixed wall-clock budget.
#
# The step count is fixed before the run (the learning-rate schedule depends on it): a short probe
# measures seconds per step, and STEPS = BUDGET_S / (s/step), capped at MAX_STEPS. (A 100-step
# probe on an H100 read 100 steps/s where the long run made 21: the probe is now 500 steps, and a
# timeout still ends the run BUDGET_S + 60 s in, keeping best/ and last/.) Needs only
# torch, numpy, safetensors and tqdm, so it runs on a bare CUDA image. The corpus travels
# prepared and thinned (git-ignored devcarry/, made here first):
#
#   python -c "from arbg_core.data import prepare_corpus; \
#              prepare_corpus('data/dipeptides_md', 'devcarry/corpus', stride=6)"
#   BUDGET_S=330 OUT=/some/dir scripts/device_dipeptides.sh
#
# A second, annealing stage from that checkpoint, with a given step count (no probe):
#
#   STEPS=3000 LR=1e-3 SEED=1 INIT=runs/dipeptides_gpu/best BUDGET_S=170 OUT=... scripts/device_dipeptides.sh
#
# OUT receives best/ (the checkpoint to ship), summary.json, probe.json and train.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
CORPUS=${CORPUS:-devcarry/corpus}
BUDGET_S=${BUDGET_S:-330}
MAX_STEPS=${MAX_STEPS:-20000}
: "${OUT:?set OUT to the folder that receives the checkpoint}"
mkdir -p "$OUT"
TRAIN=("$PY" -c "from arbg_core.cli import main; main()" train --transferable --data "$CORPUS"
       --size small --optimizer muon --lr "${LR:-2e-3}" --batch-size 256 --seed "${SEED:-0}"
       --device cuda ${INIT:+--init "$INIT"})
nvidia-smi -L || true
if [ -z "${STEPS:-}" ]; then
t0=$(date +%s.%N)
"${TRAIN[@]}" --out /tmp/probe --steps 5 --val-every 100000 > /dev/null 2> /tmp/probe.err || { tail -c 3000 /tmp/probe.err; exit 1; }
t1=$(date +%s.%N)
"${TRAIN[@]}" --out /tmp/probe2 --steps 505 --val-every 100000 > /dev/null 2> /tmp/probe.err || { tail -c 3000 /tmp/probe.err; exit 1; }
t2=$(date +%s.%N)
STEPS=$("$PY" - "$t0" "$t1" "$t2" "$BUDGET_S" "$MAX_STEPS" <<'PY'
import sys
t0, t1, t2, budget, cap = map(float, sys.argv[1:])
per_step = ((t2 - t1) - (t1 - t0)) / 500  # start-up cost cancels
fixed = t1 - t0
steps = int(min(cap, (budget - fixed) / per_step * 0.8))  # validation, saves, slower later steps
print(max(500, steps // 250 * 250))
PY
)
echo "probe: 5 and 505 steps, $STEPS steps fit $BUDGET_S s"
echo "{\"t0\": $t0, \"t1\": $t1, \"t2\": $t2, \"steps\": $STEPS, \"budget_s\": $BUDGET_S}" > "$OUT/probe.json"
fi
timeout $((BUDGET_S + 60)) "${TRAIN[@]}" --out /tmp/dipeptides --steps "$STEPS" --val-every 250 > "$OUT/train.log" 2> /tmp/train.err || true
tr '\r' '\n' < /tmp/train.err | tail -c 2000
mkdir -p "$OUT/best" "$OUT/last"
cp /tmp/dipeptides/best/* "$OUT/best/"
cp /tmp/dipeptides/last/config.json /tmp/dipeptides/last/card.json "$OUT/last/"
cp /tmp/dipeptides/summary.json "$OUT/" 2>/dev/null || echo "no summary.json: the run did not finish"
cat "$OUT/train.log"
