"""The recipe ablation (issue #15): train one variant per row at equal tokens, evaluate each on a
held-out test split, and collect one JSON.

Each variant is an `arbg train` run followed by an `arbg evaluate` run, as a user would type them,
so a row of the table can be rerun by hand from the commands stored next to it. Runs resume: a
variant whose report exists is read, not rerun, and the JSON is rewritten after every variant.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .files import read_json, write_json


@dataclass(frozen=True)
class Variant:
    name: str
    frame: str = "body"
    bins: int = 1024
    optimizer: str = "muon"
    lr: float = 2e-3

    def train_flags(self) -> list[str]:
        return ["--frame", self.frame, "--bins", str(self.bins), "--optimizer", self.optimizer,
                "--lr", str(self.lr)]


VARIANTS = {v.name: v for v in (
    Variant("centered", frame="centered"),
    Variant("body"),
    Variant("body_4096", bins=4096),
    Variant("body_adamw", optimizer="adamw", lr=1e-3),
    Variant("body_heavy", frame="body-heavy"),  # heavy atoms first, then the hydrogens
)}


@dataclass(frozen=True)
class Setup:
    """What every variant of one system shares: data, test split, budget."""

    system: str  # a label: ala2, aaa
    data: str  # arbg md folder (train/val split of it)
    reference: str  # prepared .npz whose test split the evaluation uses
    steps: int = 500
    batch_size: int = 256
    size: str = "small"
    n_proposals: int = 100_000
    seed: int = 0


def commands(setup: Setup, variant: Variant, runs: Path) -> tuple[list[str], list[str]]:
    """The `arbg train` and `arbg evaluate` command lines of one variant."""
    out = runs / f"{setup.system}_{variant.name}"
    arbg = [sys.executable, "-m", "arbg_core.cli"]
    train = arbg + ["train", "--data", setup.data, "--split", "0.9,0.1,0", "--size", setup.size,
                    "--steps", str(setup.steps), "--batch-size", str(setup.batch_size),
                    "--warmup-steps", str(max(1, setup.steps // 8)), "--val-every", "100",
                    "--save-every", "50",
                    "--seed", str(setup.seed), "--device", "cpu", "--out", str(out),
                    *variant.train_flags()]
    evaluate = arbg + ["evaluate", "--model", str(out / "best"), "--reference", setup.reference,
                       "--n-proposals", str(setup.n_proposals), "--seed", str(setup.seed),
                       "--device", "cpu", "--out", str(out / "eval")]
    return train, evaluate


def trained(setup: Setup, variant: Variant, runs: Path) -> Path:
    """Train one variant (resuming a killed run; nothing if it finished); its run folder."""
    out = runs / f"{setup.system}_{variant.name}"
    if not (out / "summary.json").exists():
        train, _ = commands(setup, variant, runs)
        subprocess.run(train + (["--resume"] if (out / "state").exists() else []), check=True)
    return out


def row(setup: Setup, variant: Variant, runs: Path) -> dict:
    """Evaluate one trained variant (or read what an earlier run left), as one table row."""
    out = trained(setup, variant, runs)
    train, evaluate = commands(setup, variant, runs)
    if not (out / "eval" / "report.json").exists():
        subprocess.run(evaluate, check=True)
    summary, report = read_json(out / "summary.json"), read_json(out / "eval" / "report.json")
    m, s = report["metrics"], report["sampling"]
    n = s["counts"]["n"]
    return {"system": setup.system, "variant": variant.name, **vars(variant),
            "steps": setup.steps, "batch_size": setup.batch_size, "size": setup.size,
            "data": setup.data,
            "training_tokens_per_s": summary.get("tokens_per_s"),
            "wall_time_s": summary.get("wall_time_s"),
            "val_nll": summary.get("best_val_nll", summary.get("val_nll")),
            "n_proposals": n, "ess": s["ess"], "ess_fraction": s["ess_fraction"],
            "dropped_fraction": s["counts"]["dropped"] / n,
            "mirrored_fraction": s["counts"]["mirrored"] / n,
            "proposal": m["proposal"], "reweighted": m["reweighted"],
            "noise_floor": m["noise_floor"],
            "commands": {"train": " ".join(["arbg"] + train[3:]),
                         "evaluate": " ".join(["arbg"] + evaluate[3:])}}


def run(setup: Setup, names: list[str], runs: Path, out_json: Path) -> list[dict]:
    """Train every named variant of `setup` first (so the table's training is done before the
    long evaluations), then evaluate each, merging rows into out_json as they come (rows of
    other systems and variants are kept)."""
    for name in names:
        trained(setup, VARIANTS[name], runs)
    table = {"rows": []}
    for name in names:
        r = row(setup, VARIANTS[name], runs)
        # read just before writing: another system's run may share the file
        table = read_json(out_json) if out_json.exists() else {"rows": []}
        table["rows"] = [x for x in table["rows"]
                         if (x["system"], x["variant"]) != (r["system"], r["variant"])] + [r]
        write_json(out_json, table)
    return table["rows"]


def table(rows: list[dict]) -> str:
    """The README's markdown table of the rows: one line per system and variant."""
    head = ("| system | variant | frame | bins | optimizer | proposals | ESS | mirrored | dropped "
            "| E-W2 rw (floor) | T-W2 rw (floor) | proposal E-W2 | val NLL | tokens/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (r["system"], r["variant"])):
        rw, fl = r["reweighted"], r["noise_floor"]
        lines.append(
            f"| {r['system']} | {r['variant']} | {r['frame']} | {r['bins']} | {r['optimizer']} "
            f"| {r['n_proposals']:,} | {100 * r['ess_fraction']:.3g} % "
            f"| {100 * r['mirrored_fraction']:.1f} % | {100 * r['dropped_fraction']:.1f} % "
            f"| {_g(rw['e_w2'])} ({_g(fl['e_w2'])}) | {_g(rw['t_w2'])} ({_g(fl['t_w2'])}) "
            f"| {_g(r['proposal']['e_w2'])} | {_g(r['val_nll'])} "
            f"| {_g(r['training_tokens_per_s'])} |")
    return "\n".join(lines)


def _g(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system")
    p.add_argument("--data")
    p.add_argument("--reference")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--n-proposals", type=int, default=100_000)
    p.add_argument("--runs", default="runs/ablation")
    p.add_argument("--out", default="results/recipe_ablation.json")
    p.add_argument("--table", action="store_true", help="print the README table of --out, run nothing")
    a = p.parse_args(argv)
    if a.table:
        print(table(read_json(Path(a.out))["rows"]))
        return
    if not (a.system and a.data and a.reference):
        p.error("--system, --data and --reference are needed to run variants")
    setup = Setup(a.system, a.data, a.reference, steps=a.steps, n_proposals=a.n_proposals)
    run(setup, a.variants, Path(a.runs), Path(a.out))


if __name__ == "__main__":
    main()
