"""Print a transferable model card's zero-shot evaluation as the README's Markdown table.

    python scripts/card_table.py assets/models/dipeptides/card.json

One row per test sequence (reweighted and proposal E-W2, T-W2, TICA-W2, the MD-vs-MD noise
floors, ESS and the dropped and mirrored fractions), then the mean and standard deviation over
sequences, then the tau tuning on the val sequences.
"""

from __future__ import annotations

import json
import sys

METRICS = ("e_w2", "t_w2", "tica_w2")
HEAD = ("| sequence | E-W2 rew. | E-W2 prop. | E-W2 floor | T-W2 rew. | T-W2 prop. | T-W2 floor "
        "| TICA-W2 rew. | TICA-W2 prop. | TICA-W2 floor | ESS | dropped | mirrored |")


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def _cells(get) -> list[str]:
    cells = []
    for k in METRICS:
        cells += [_num(get(f"reweighted_{k}")), _num(get(f"proposal_{k}")),
                  _num(get(f"noise_floor_{k}"))]
    return cells + [f"{100 * get('ess_fraction'):.2f} %", f"{100 * get('dropped_fraction'):.1f} %",
                    f"{100 * get('mirrored_fraction'):.1f} %"]


def table(card: dict) -> str:
    ev = card["evaluation"]
    lines = [HEAD, "|" + "---|" * (HEAD.count("|") - 1)]
    for row in ev["per_sequence"]:
        lines.append("| " + " | ".join([row["sequence"]] + _cells(row.__getitem__)) + " |")
    mean = ev["mean"]
    lines.append("| **mean** | " + " | ".join(_cells(lambda k: mean[k]["mean"])) + " |")
    lines.append("| std over sequences | " + " | ".join(_cells(lambda k: mean[k]["std"])) + " |")
    tuning = ", ".join(f"tau {t['tau']}: E-W2 {t['mean_reweighted_e_w2_val']:.3g}, "
                       f"ESS {100 * t['mean_ess_fraction_val']:.2f} %" for t in card["tau_tuning"])
    return "\n".join(lines) + f"\n\nTau tuning (mean over the val sequences): {tuning}; chosen {card['tau']}."


if __name__ == "__main__":
    print(table(json.loads(open(sys.argv[1]).read())))
