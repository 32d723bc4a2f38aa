"""`arbg` command line: build | md | train | sample | evaluate | refine | ship | fit | bench.

This module is the parser; what each command does is in `commands.py` (`commands_train.py` for
train, `commands_fit.py` for fit). Flag names follow
DESIGN §14. The flags that set a config (`MDConfig`, `TrainConfig`,
`SampleConfig`) are made from the dataclass's fields: type, default and help come from the field,
choices from the package's constants, so a new setting is one field; numbers are checked
by the dataclass as they are parsed. Bad input of any kind (a flag, a file, a folder; see
`errors.user_errors`) exits with code 2 and one line on stderr, before any sampling or MD starts.
"""

from __future__ import annotations

import argparse
import sys

from . import commands as cmd
from . import commands_fit, commands_train
from .checks import POSITIVE_INT, Range
from .errors import UsageError, one_line, user_errors
from .flags import add_config_flags

__all__ = ["UsageError", "build_parser", "main"]  # UsageError: callers catch cli.UsageError


def _termini_flag(p, default="zwitterionic"):
    from .peptide import TERMINI

    p.add_argument("--termini", choices=TERMINI, default=default,
                   help="free NH3+/COO- ends (zwitterionic) or ACE/NME caps ('A' capped = alanine "
                        "dipeptide)")


# ------------------------------------------------------------------------------------- parser


def _add_sampling_flags(p):
    """Flags shared by `sample` and `evaluate` (names fixed by DESIGN §14)."""
    from .pipeline import SampleConfig

    p.add_argument("--model", metavar="DIR", help="checkpoint folder or shipped name (default: the "
                   "shipped model that covers --sequence, per-system first, then transferable)")
    p.add_argument("--sequence", metavar="SEQ")
    _termini_flag(p, default=None)
    skip = ("n", "clip_fraction", "energy_chunk") + (
        ("use_kv_cache", "reweight") if p.prog.endswith("evaluate") else ())
    add_config_flags(p, SampleConfig, rename={"tau": "--temperature"}, skip=skip)


def _add_train_parser(sub):
    from .energy import DEFAULT_PRESET, PRESETS
    from .frames import FRAMES
    from .model import SIZES
    from .train import BF16_MODES, MOMENTS, OPTIMIZERS, SWITCHES, TrainConfig

    p = sub.add_parser("train", help="train a model on MD frames",
                       description="Train a per-system model, or with --transferable a "
                                   "sequence-conditioned one on a corpus. Rerun with --resume to "
                                   "continue. Under torchrun it trains data-parallel (DDP).")
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="arbg md folders (PATH:N keeps each replica's first N frames), trajectory "
                        "files (with --top) or one prepared .npz; "
                        "with --transferable one corpus folder or `arbg md --sequences` folder")
    p.add_argument("--top", metavar="PDB", help="topology for trajectory files")
    p.add_argument("--stride", type=POSITIVE_INT.parse, default=1, help="use every n-th frame")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TR,VA,TE",
                   help="time-block fractions of each replica for train, validation and test")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=tuple(PRESETS),
                   help="force field the data came from")
    p.add_argument("--transferable", action="store_true",
                   help="sequence-conditioned model on a corpus (fixed std, a = 4.5)")
    add_config_flags(p, TrainConfig, rename={"n_bins": "--bins"}, defaults={"save_every": None},
                     choices={"size": SIZES, "optimizer": OPTIMIZERS, "bf16": BF16_MODES,
                              "frame": tuple(FRAMES), "resident": SWITCHES,
                              "compile": SWITCHES, "moments": tuple(MOMENTS)})
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--save-data", metavar="FILE.npz",
                   help="also write the prepared dataset (--transferable: the corpus folder to "
                        "prepare into, default OUT/corpus)")
    p.add_argument("--pack", action="store_true",
                   help="write --save-data packed: fixed point at 2^-16 nm, lzma (packed.py), "
                        "about half the size, for a lent GPU machine")
    p.add_argument("--dry-run", action="store_true", help="print parameter counts and exit")
    p.add_argument("--out", metavar="DIR")
    p.set_defaults(func=commands_train.cmd_train)


def _add_refine_parser(sub):
    from .refine import RefineConfig

    p = sub.add_parser("refine", help="refine a model against the force field alone (no MD)",
                       description="Draw from the model, weight by exp(-u)/q, update; the result "
                                   "is a per-system checkpoint whose card holds the ESS before "
                                   "and after on fresh samples (DESIGN §16).")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="checkpoint folder or shipped name")
    p.add_argument("--sequence", metavar="SEQ", help="for a transferable model: the peptide")
    _termini_flag(p, default=None)
    add_config_flags(p, RefineConfig, rename={"tau": "--temperature"}, defaults={"steps": None})
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", metavar="DIR",
                   help="default: MODEL-refined-SYSTEM in the user models folder "
                        "(ARBG_USER_MODELS_DIR, else runs/user_models), where `arbg sample "
                        "--sequence` and the app find it")
    p.set_defaults(func=cmd.cmd_refine)


def build_parser():
    from . import ship
    from .energy import PRESETS
    from .md import MDConfig

    parser = argparse.ArgumentParser(
        prog="arbg", description="Autoregressive Boltzmann generators for peptides.",
        epilog="Run `arbg COMMAND --help` for the flags of one command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("build", help="build an all-atom peptide and write a PDB")
    p.add_argument("sequence", metavar="SEQ", help="one-letter amino-acid codes, e.g. AAA")
    _termini_flag(p)
    p.add_argument("--out", required=True, metavar="FILE.pdb")
    p.set_defaults(func=cmd.cmd_build)

    p = sub.add_parser("md", help="reference MD with OpenMM (chunked, resumable)",
                       description="Reference MD. Rerun the same command to resume a killed run.")
    p.add_argument("sequence", metavar="SEQ", nargs="?", help="one-letter codes")
    _termini_flag(p)
    p.add_argument("--sequences", metavar="FILE",
                   help="corpus mode: one sequence per line, optionally with its role train|val|test")
    p.add_argument("--shard", metavar="i/n", help="corpus mode: run every n-th sequence from i")
    add_config_flags(p, MDConfig, rename={"temperature_k": "--temperature"},
                     defaults={"ns": None}, required=("ns",), choices={"preset": tuple(PRESETS)})
    p.add_argument("--replicas", type=POSITIVE_INT.parse, default=1,
                   help="independent seeds, one process each")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd.cmd_md)

    _add_train_parser(sub)

    p = sub.add_parser("sample", help="draw samples, reweight to the Boltzmann distribution")
    _add_sampling_flags(p)
    p.add_argument("--n", type=POSITIVE_INT.parse, default=1000, help="number of proposals")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd.cmd_sample)

    p = sub.add_parser("evaluate", help="sample, reweight and compare with reference MD")
    _add_sampling_flags(p)
    p.add_argument("--reference", required=True, metavar="TRAJ",
                   help="trajectory file, arbg md folder, or prepared .npz (its test split)")
    p.add_argument("--top", metavar="PDB", help="topology for a trajectory file")
    p.add_argument("--n-proposals", type=POSITIVE_INT.parse, default=100_000)
    p.add_argument("--n-eval", type=Range(int, 2).parse, default=10_000,
                   help="samples and frames compared")
    p.add_argument("--lag", type=POSITIVE_INT.parse, default=10,
                   help="TICA lag in reference frames (shorter than the reference)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd.cmd_evaluate)

    _add_refine_parser(sub)
    ship.add_parser(sub)
    commands_fit.add_parser(sub)

    p = sub.add_parser("bench", help="run benchmarks, results as JSON",
                       description="The package's benchmarks; each writes OUT/NAME*.json.")
    p.add_argument("names", nargs="*", metavar="NAME", help="which ones (default: all)")
    p.add_argument("--out", default="results", metavar="DIR")
    p.set_defaults(func=cmd.cmd_bench)
    return parser


class _BadFlags(Exception):
    """A flag argparse refused (its message is already on stderr)."""


def main(argv=None):
    """Run `arbg ARGV`; returns the exit code (2: bad input, said in one line on stderr)."""
    parser = build_parser()

    def one_line_error(message):
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        raise _BadFlags

    parser.error = one_line_error
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sp in action.choices.values():
            sp.error = one_line_error
    try:
        args = parser.parse_args(argv)
    except _BadFlags:
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except user_errors() as e:  # the user's to fix: one line, no traceback
        sys.stderr.write(f"arbg {args.command}: error: {one_line(e)}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
