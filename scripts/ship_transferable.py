"""Turn a trained transferable checkpoint into a shipped model: tune tau on the validation
sequences, evaluate zero-shot on the test sequences, write the card, ship thinned test ensembles.

    python scripts/ship_transferable.py --checkpoint runs/dipeptides/best \
        --md data/dipeptides_md --name dipeptides [--taus 0.8,0.9,1.0] [--n-tune 10000] \
        [--n-proposals 100000] [--n-eval 10000] [--ref-frames 2000] \
        [--training-summary runs/dipeptides/summary.json] [--wait]

Roles come from the MD folder's manifest (the sequence list): tau minimizes the mean reweighted
E-W2 over the `val` sequences (all their MD frames); the card's metrics are those of the `test`
sequences, which the model never saw (all their MD frames as reference). Writes
DEST/assets/models/NAME/, DEST/assets/reference/NAME/SEQ-zw.npz (at most --ref-frames frames
each, evenly strided in time, for the app) and DEST/results/ship_NAME/ (reports and figures).
Finished work (each tau's tuning, each test sequence's row) is kept under results/ship_NAME/ with
what it depends on (the weights' hash, tau, sample counts, seed), so a rerun skips it; with
--wait the script evaluates test sequences as their MD finishes; with --shard i/n only every
n-th one (several processes at once), and a final run without --shard ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arbg_core import checkpoint  # noqa: E402
from arbg_core.data import RESERVED, save_reference  # noqa: E402
from arbg_core.energy import EnergyModel  # noqa: E402
from arbg_core.md import MDConfig  # noqa: E402
from arbg_core.metrics import e_w2  # noqa: E402
from arbg_core.peptide import build, system_name  # noqa: E402
from arbg_core.pipeline import SampleConfig, run_sampling, versions  # noqa: E402
from arbg_core.report import evaluate, load_reference  # noqa: E402

METRICS = ("e_w2", "t_w2", "tica_w2")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sequences_by_role(md_root: Path, manifest: dict) -> dict[str, list[str]]:
    """{role: [sequence]} of the finished runs in an `arbg md --sequences` folder."""
    roles = manifest.get("roles") or {}
    out = {"train": [], "val": [], "test": []}
    for seq in manifest["sequences"]:
        if seq.upper() in RESERVED:
            raise ValueError(f"{md_root} holds the reserved sequence {seq}: it is for external "
                             "evaluation only")
        if finished(md_root, seq, manifest):
            out.setdefault(roles.get(seq, "train"), []).append(seq)
    return out


def finished(md_root: Path, seq: str, manifest: dict) -> bool:
    """Whether a sequence's MD ran its whole length (a shard may still be running it)."""
    state = md_root / seq / "state.json"
    if not state.is_file():
        return False
    return json.loads(state.read_text())["frames_done"] >= MDConfig(**manifest["config"]).n_frames


def cached(path: Path, key: dict, compute):
    """compute() once for this key: its result is kept in `path` next to the key, so a rerun
    (after a crash, or to add sequences whose MD has finished since) skips finished work."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}, indent=2, default=float))
    return value


def mean_table(rows: list[dict]) -> dict:
    """Mean (and standard deviation) over sequences of every metric of the per-sequence rows."""
    out = {}
    for key in rows[0]:
        if key == "sequence":
            continue
        vals = np.array([r[key] for r in rows], float)
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--md", required=True, help="`arbg md --sequences` folder of the corpus")
    p.add_argument("--name", required=True)
    p.add_argument("--taus", default="0.8,0.9,1.0")
    p.add_argument("--n-tune", type=int, default=10_000, help="proposals per val sequence and tau")
    p.add_argument("--n-proposals", type=int, default=100_000, help="proposals per test sequence")
    p.add_argument("--n-eval", type=int, default=10_000)
    p.add_argument("--ref-frames", type=int, default=2_000, help="frames per shipped test ensemble")
    p.add_argument("--lag", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--training-summary")
    p.add_argument("--wait", action="store_true",
                   help="evaluate test sequences as their MD finishes, until all are done")
    p.add_argument("--shard", metavar="i/n",
                   help="evaluate only every n-th test sequence from i (one process per core), "
                        "then stop; a run without --shard reuses their rows and ships")
    p.add_argument("--dest", default=str(ROOT), help="root of assets/ and results/ (the repo)")
    p.add_argument("--notes", default="")
    a = p.parse_args(argv)

    md_root, dest = Path(a.md), Path(a.dest)
    loaded = checkpoint.load(a.checkpoint)
    if not loaded.config.get("transferable"):
        raise SystemExit(f"{a.checkpoint} is a single-system model: use scripts/ship_model.py")
    manifest = json.loads((md_root / "manifest.json").read_text())
    termini = manifest["termini"]
    roles = sequences_by_role(md_root, manifest)
    listed = manifest.get("roles") or {}
    all_test = [seq for seq in manifest["sequences"] if listed.get(seq) == "test"]
    if not roles["val"] or not all_test:
        raise SystemExit(f"{md_root} needs finished val sequences and listed test sequences; "
                         f"it has {roles}")
    log(f"val {roles['val']}, test {roles['test']}")

    systems = {}

    def system(seq):
        if seq not in systems:
            pep = build(seq, termini)
            systems[seq] = (pep, EnergyModel(pep.topology, checkpoint.preset_of(loaded.config)),
                            load_reference(md_root / seq))
        return systems[seq]

    out_eval = dest / "results" / f"ship_{a.name}"
    weights = hashlib.sha256((Path(a.checkpoint) / "model.safetensors").read_bytes()).hexdigest()

    def tune(tau):
        scores, ess = [], []
        for seq in roles["val"]:
            pep, em, ref = system(seq)
            res = run_sampling(loaded, pep, SampleConfig(n=a.n_tune, tau=tau, seed=a.seed + 1,
                                                         batch_size=a.batch_size), energy_model=em)
            ens = res.ensemble
            live = np.isfinite(ens.u) & (ens.weights > 0)
            scores.append(e_w2(em.reduced_energy(ref.xyz), ens.u[live], w_model=ens.weights[live]))
            ess.append(ens.ess_fraction)
        return {"tau": tau, "mean_reweighted_e_w2_val": float(np.mean(scores)),
                "mean_ess_fraction_val": float(np.mean(ess)),
                "per_sequence_e_w2": dict(zip(roles["val"], map(float, scores)))}

    tuning = []
    for tau in (float(t) for t in a.taus.split(",")):
        key = {"weights": weights, "tau": tau, "n": a.n_tune, "seed": a.seed, "val": roles["val"]}
        tuning.append(cached(out_eval / "tuning" / f"tau_{tau}.json", key, lambda: tune(tau)))
        log(f"tau {tau}: mean val E-W2 {tuning[-1]['mean_reweighted_e_w2_val']:.3f}, "
            f"mean ESS {100 * tuning[-1]['mean_ess_fraction_val']:.2f}%")
    best_tau = min(tuning, key=lambda r: r["mean_reweighted_e_w2_val"])["tau"]

    def test_row(seq):
        pep, em, ref = system(seq)
        t0 = time.perf_counter()
        result = run_sampling(loaded, pep, SampleConfig(n=a.n_proposals, tau=best_tau, seed=a.seed,
                                                        batch_size=a.batch_size), energy_model=em)
        report = evaluate(result, ref, out_eval / seq, lag=a.lag, n_eval=a.n_eval, seed=a.seed,
                          energy_model=em).report
        m, s = report["metrics"], report["sampling"]
        return {"sequence": seq, **{f"{ens}_{k}": m[ens][k] for ens in ("proposal", "reweighted")
                                    for k in METRICS},
                **{f"noise_floor_{k}": m["noise_floor"][k] for k in METRICS},
                "ess_fraction": s["ess_fraction"],
                # samples with mixed chirality centers (weight 0) and all-inverted ones (mirrored)
                **{f"{k}_fraction": s["counts"][k] / s["counts"]["n"] for k in ("dropped", "mirrored")},
                "reference_frames": int(ref.n_frames),
                "sampling_s": time.perf_counter() - t0}

    mine = all_test
    if a.shard:
        i, n = map(int, a.shard.split("/"))
        mine = all_test[i::n]
    rows = []
    key = {"weights": weights, "tau": best_tau, "n": a.n_proposals, "n_eval": a.n_eval,
           "seed": a.seed, "lag": a.lag}
    while True:  # with --wait, test sequences are evaluated as their MD finishes
        todo = [seq for seq in mine if seq not in {r["sequence"] for r in rows}
                and finished(md_root, seq, manifest)]
        for seq in todo:
            rows.append(cached(out_eval / seq / "row.json", key, lambda: test_row(seq)))
            log(f"{seq}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[-1].items()
                                       if k != "sequence"))
        if len(rows) == len(mine) or not a.wait:
            break
        if not todo:
            time.sleep(60)
    if a.shard and len(rows) == len(mine):
        log(f"shard {a.shard}: {len(rows)} test sequences done; rerun without --shard to ship")
        return
    if len(rows) < len(mine):
        raise SystemExit(f"MD of {len(mine) - len(rows)} test sequences is not finished: "
                         "rerun later (finished work is kept), or with --wait")
    rows.sort(key=lambda r: all_test.index(r["sequence"]))
    ref_dir = dest / "assets" / "reference" / a.name
    if ref_dir.exists():
        shutil.rmtree(ref_dir)
    ref_dir.mkdir(parents=True)
    for seq in all_test:
        pep, _, ref = system(seq)
        save_reference(ref_dir / f"{system_name(seq, termini)}.npz", ref, pep.features, a.ref_frames,
                       {"system": {"sequence": seq, "termini": termini}, "source": str(md_root / seq),
                        "frames": "all frames of a test sequence"})

    model_dest = checkpoint.copy_weights(a.checkpoint, dest / "assets" / "models" / a.name)
    training = json.loads(Path(a.training_summary).read_text()) if a.training_summary else {}
    training.pop("history", None)
    card = {
        "name": a.name, "transferable": True, "tau": best_tau,
        "description": f"Transferable ArBG for {termini} peptides of length "
                       f"{loaded.config.get('extra', {}).get('lengths')}",
        "training": {"steps": loaded.card.get("steps"), "val_nll": loaded.card.get("val_nll"),
                     "wall_time_s": loaded.card.get("wall_time_s"), "data": loaded.card.get("data"),
                     **{k: training.get(k) for k in ("device", "tokens_per_s", "params", "bf16")}},
        "corpus_md": {"folder": str(a.md), "roles": sequences_by_role(md_root, manifest),
                      "protocol": manifest["config"]},
        "tau_tuning": tuning,
        "evaluation": {"zero_shot": "test sequences, never trained on; reference = all their MD frames",
                       "n_proposals": a.n_proposals, "n_eval": a.n_eval,
                       "per_sequence": rows, "mean": mean_table(rows),
                       "goals_reweighted_mean": {"e_w2": 1.0, "t_w2": 0.35, "ess_fraction": 0.02}},
        "commands": {"reproduce": "python " + " ".join(["scripts/ship_transferable.py"] +
                                                        (argv if argv is not None else sys.argv[1:]))},
        "versions": versions(), "notes": a.notes,
    }
    (model_dest / "card.json").write_text(json.dumps(card, indent=2, default=float))
    log(f"mean over {len(rows)} test sequences: " + json.dumps(
        {k: round(v["mean"], 4) for k, v in card["evaluation"]["mean"].items()}))
    log(f"shipped {model_dest} and {ref_dir}")


if __name__ == "__main__":
    main()
