#!/usr/bin/env bash
# The long CPU jobs behind the shipped models, each resumable: rerun this script after a machine
# restart and every job continues where its last checkpoint left it. One job per core; logs in
# data/*.log and runs/*.log. Which jobs: `scripts/background_jobs.sh list`.
#
#   scripts/background_jobs.sh aaa-md        # capped tri-alanine reference MD (#5)
#   scripts/background_jobs.sh aaa-train     # tri-alanine model on the CPU (#5), needs data/aaa.npz
#   scripts/background_jobs.sh corpus I/N    # dipeptide corpus MD, shard I of N (#8)
#   scripts/background_jobs.sh dipeptides-train  # transferable model (#8) once the corpus is done;
#                                                 # alone on the machine: OMP_NUM_THREADS=2
#   scripts/background_jobs.sh fallback ala2  # #16's CPU fallback, body frame: MD, training, and
#   scripts/background_jobs.sh fallback aaa   # evaluation on the shipped test split, one core
#                                             # each (FALLBACK_CORE=0|1), into runs/ship_cpu_NAME
#   scripts/background_jobs.sh status        # how far each job is
set -euo pipefail
cd "$(dirname "$0")/.."
ARBG=${ARBG:-.venv/bin/arbg}
mkdir -p data runs
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one core per job: two threads beside another job are slower
export AAA_STEPS=5500 DIPEPTIDES_STEPS=4000  # training budgets; `status` reports against them

case "${1:-list}" in
  aaa-md)
    nohup "$ARBG" md AAA --termini capped --ns 200 --seed 201 --out data/aaa_t300/replica_00 \
      >> data/aaa_t300.log 2>&1 & ;;
  aaa-train)
    [ -f data/aaa.npz ] || "$ARBG" train --data data/aaa_t300:50000 data/aaa_device/md_aaa \
      --split 0.9,0.1,0 --save-data data/aaa.npz
    resume=$([ -d runs/aaa_cpu/state ] && echo --resume || true)
    nohup "$ARBG" train --data data/aaa.npz --size small --optimizer muon --lr 2e-3 \
      --batch-size 256 --steps "$AAA_STEPS" --val-every 250 --seed 0 --out runs/aaa_cpu $resume \
      >> runs/aaa_cpu.log 2>&1 & ;;
  corpus)
    nohup "$ARBG" md --sequences assets/corpus/dipeptides.txt --shard "${2:?shard i/n}" --ns 5 \
      --out data/dipeptides_md >> "data/dipeptides_md_shard${2%%/*}.log" 2>&1 & ;;
  dipeptides-train)
    resume=$([ -d runs/dipeptides/state ] && echo --resume || true)
    nohup "$ARBG" train --transferable --data data/dipeptides_md --size small --optimizer muon \
      --lr 2e-3 --batch-size 256 --steps "$DIPEPTIDES_STEPS" --val-every 250 --seed 0 --out runs/dipeptides $resume \
      >> runs/dipeptides.log 2>&1 & ;;
  fallback)
    nohup "$0" _fallback "${2:?ala2 or aaa}" >> "runs/fallback_${2}.log" 2>&1 & ;;
  _fallback)  # the chain itself, in the foreground; every step resumes or finds itself done
    pin=(taskset -c "${FALLBACK_CORE:-0}")
    case "$2" in  # hot: ns at 500 K (0: none); run: the training folder
      ala2) seq=A ns=60 seed=11 hot=60 frames=60000 val=6000 steps=2000 warmup=150 every=200
            run=runs/cpu_ala2_body3 taus=0.75,0.8,0.85,0.9,0.95,1.0 n_tune=10000 ;;
      aaa) seq=AAA ns=30 seed=211 hot=0 frames=30000 val=3000 steps=1000 warmup=100 every=100
           run=runs/cpu_aaa_body taus=0.8,0.9,0.95,1.0 n_tune=8000 ;;
      *) echo "fallback: ala2 or aaa" >&2; exit 2 ;;
    esac
    data=("data/${2}_t300")
    "${pin[@]}" "$ARBG" md "$seq" --termini capped --ns "$ns" --seed "$seed" --out "${data[0]}"
    if [ "$hot" != 0 ]; then
      data+=("data/${2}_t500")
      "${pin[@]}" "$ARBG" md "$seq" --termini capped --ns "$hot" --temperature 500 \
        --seed "$seed" --out "${data[1]}"
    fi
    "${pin[@]}" "$ARBG" train --data "${data[@]}" --split 0.9,0.1,0 --size small --steps "$steps" \
      --batch-size 256 --warmup-steps "$warmup" --val-every "$every" --save-every 100 \
      --compile on --seed 0 --device cpu --out "$run" --resume
    "${pin[@]}" "$ARBG" ship --checkpoint "$run/best" --md "${data[0]}" --train-frames "$frames" \
      --val-frames "$val" --test "assets/reference/${2}.npz" --taus "$taus" --n-tune "$n_tune" \
      --name "$2" --training-summary "$run/summary.json" --dest "runs/ship_cpu_${2}" ;;
  status)
    .venv/bin/python - <<'PY'
import json
import os
from pathlib import Path

def frames(folder):
    f = Path(folder) / "state.json"
    return json.loads(f.read_text())["frames_done"] if f.is_file() else 0

print(f"aaa-md: {frames('data/aaa_t300/replica_00') / 1000:.1f} ns of 300 K tri-alanine MD (goal >= 100)")
for job, run, steps in (("aaa-train", "runs/aaa_cpu", os.environ["AAA_STEPS"]),
                         ("dipeptides-train", "runs/dipeptides", os.environ["DIPEPTIDES_STEPS"])):
    card = Path(run) / "last/card.json"
    if card.is_file():
        c = json.loads(card.read_text())
        print(f"{job}: step {c.get('steps')} of {steps}, val NLL {c.get('val_nll'):.3f}")
    else:
        print(f"{job}: not started")
root = Path("data/dipeptides_md")
if (root / "manifest.json").is_file():
    manifest = json.loads((root / "manifest.json").read_text())
    roles = manifest.get("roles") or {}
    for role in ("train", "val", "test"):
        seqs = [s for s in manifest["sequences"] if roles.get(s, "train") == role]
        done = sum(frames(root / s) >= 5000 for s in seqs)
        print(f"corpus {role}: {done} of {len(seqs)} sequences at 5 ns")
else:
    print("corpus: not started")
PY
    ;;
  list)
    awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" ;;
  *)
    echo "unknown job ${1}; run: $0 list" >&2; exit 2 ;;
esac
