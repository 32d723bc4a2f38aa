"""Write assets/corpus/dipeptides.txt: the transferable model's zwitterionic dipeptides.

    python scripts/make_dipeptide_list.py [--seed 2026] [--out assets/corpus/dipeptides.txt]

100 training sequences in which every amino acid stands exactly 5 times first and 5 times
second (the union of 5 random permutations of the 20), then 10 validation and 20 test sequences
drawn from the rest; none of them reserved (data.RESERVED). The output is the `arbg md
--sequences` file format: `SEQUENCE ROLE` a line.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from arbg_core.data import RESERVED
from arbg_core.peptide import AMINO_ACIDS

ROOT = Path(__file__).resolve().parent.parent  # the checkout this script belongs to

SEED = 2026
N_PERMUTATIONS, N_VAL, N_TEST = 5, 10, 20


def make(seed: int = SEED) -> str:
    rng = random.Random(seed)
    taken = set(RESERVED)
    train = []
    while len(train) < N_PERMUTATIONS * len(AMINO_ACIDS):
        second = rng.sample(AMINO_ACIDS, len(AMINO_ACIDS))
        pairs = [a + b for a, b in zip(AMINO_ACIDS, second)]
        if not taken & set(pairs):  # else draw this permutation again
            train += pairs
            taken |= set(pairs)
    rest = sorted(a + b for a in AMINO_ACIDS for b in AMINO_ACIDS if a + b not in taken)
    held_out = rng.sample(rest, N_VAL + N_TEST)
    lines = [f"# Zwitterionic dipeptides for the transferable model "
             f"(scripts/make_dipeptide_list.py --seed {seed}).",
             "# Roles: train (trained on), val (tuning), test (zero-shot evaluation only).",
             f"# Reserved for external evaluation, never listed: {' '.join(RESERVED)}"]
    for role, seqs in (("train", sorted(train)), ("val", sorted(held_out[:N_VAL])),
                       ("test", sorted(held_out[N_VAL:]))):
        lines += [f"{s} {role}" for s in seqs]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default=str(ROOT / "assets" / "corpus" / "dipeptides.txt"))
    a = p.parse_args(argv)
    Path(a.out).write_text(make(a.seed))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
