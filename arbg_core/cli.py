"""`arbg` command line: build | md | train | sample | evaluate | bench.

Usage errors exit with code 2 and one line on stderr; flag names follow DESIGN §14.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: one line, exit code 2."""


def _add_system_flags(p, sequence_required=True):
    if sequence_required:
        p.add_argument("sequence", metavar="SEQ", help="one-letter amino-acid codes, e.g. AAA")
    p.add_argument("--termini", choices=("zwitterionic", "capped"), default="zwitterionic",
                   help="free NH3+/COO- ends (default) or ACE/NME caps ('A' capped = alanine dipeptide)")


def cmd_build(args):
    from . import peptide

    pep = _build(args.sequence, args.termini)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pep.to_mdtraj().save_pdb(str(out))
    his = f", histidines: {', '.join(pep.histidine_states)}" if pep.histidine_states else ""
    print(f"{peptide.system_name(pep.sequence, pep.termini)}: {pep.n_atoms} atoms, "
          f"{len(pep.residue_blocks)} residues{his} -> {out}")


def _build(sequence, termini):
    from . import peptide

    try:
        return peptide.build(sequence, termini)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _parse_shard(text):
    try:
        i, n = (int(v) for v in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise UsageError(f"--shard must look like i/n with 0 <= i < n, got {text!r}") from None
    return i, n


def _md_one(sequence, termini, out, config, position=0):
    from tqdm import tqdm

    from .md import run_md

    pep = _build(sequence, termini)
    bar = tqdm(total=config.n_frames, desc=f"{pep.name} seed {config.seed}", unit="ps",
               unit_scale=config.save_ps, position=position, dynamic_ncols=True)

    def progress(done, total, ns_per_day):
        bar.n = done
        if ns_per_day:
            bar.set_postfix_str(f"{ns_per_day:.0f} ns/day")
        bar.refresh()

    try:
        run_md(pep.topology, pep.xyz, out, config, progress)
    finally:
        bar.close()


def _md_replica(args):
    _md_one(*args)


def cmd_md(args):
    import multiprocessing as mp
    from dataclasses import replace

    from .md import MDConfig

    if (args.sequence is None) == (args.sequences is None):
        raise UsageError("give either SEQ or --sequences FILE")
    if args.ns <= 0:
        raise UsageError("--ns must be positive")
    config = MDConfig(ns=args.ns, preset=args.preset, temperature_k=args.temperature,
                      save_ps=args.save_ps, seed=args.seed, chunk_frames=args.chunk_frames,
                      warmup_ps=args.warmup_ps)
    out = Path(args.out)
    if args.sequences is not None:
        from .data import read_sequence_list

        try:
            listed = read_sequence_list(args.sequences)
        except (OSError, ValueError) as e:
            raise UsageError(f"--sequences: {e}") from None
        seqs = [s for s, _ in listed]
        i, n = _parse_shard(args.shard) if args.shard else (0, 1)
        jobs = [(s, args.termini, out / s, replace(config, seed=args.seed + k))
                for k, s in enumerate(seqs) if k % n == i]
        manifest = {"sequences": seqs, "termini": args.termini, "config": config.__dict__,
                    "seeds": "seed + index in the sequence file", "roles": dict(listed)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        failed = []
        for job in jobs:  # one failing sequence does not stop an unattended shard
            try:
                _md_one(*job)
            except Exception as e:  # e.g. OpenMMException from a blown-up integrator
                sys.stderr.write(f"arbg md: {job[0]} failed, going on with the next: {e}\n")
                failed.append(job[0])
        if failed:
            raise UsageError(f"{len(failed)} of {len(jobs)} sequences failed ({', '.join(failed)}); "
                             "rerun the same command to retry them (finished ones are skipped)")
        return
    if args.replicas == 1:
        _md_one(args.sequence, args.termini, out, config)
        return
    jobs = [(args.sequence, args.termini, out / f"replica_{r:02d}", replace(config, seed=args.seed + r), r)
            for r in range(args.replicas)]
    with mp.get_context("spawn").Pool(args.replicas) as pool:
        pool.map(_md_replica, jobs)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="arbg", description="Autoregressive Boltzmann generators for peptides.",
        epilog="Run `arbg COMMAND --help` for the flags of one command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("build", help="build an all-atom peptide and write a PDB")
    _add_system_flags(p)
    p.add_argument("--out", required=True, metavar="FILE.pdb")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("md", help="reference MD with OpenMM (chunked, resumable)",
                       description="Reference MD. Rerun the same command to resume a killed run.")
    p.add_argument("sequence", metavar="SEQ", nargs="?", help="one-letter codes")
    _add_system_flags(p, sequence_required=False)
    p.add_argument("--sequences", metavar="FILE",
                   help="corpus mode: one sequence per line, optionally with its role train|val|test")
    p.add_argument("--shard", metavar="i/n", help="corpus mode: run every n-th sequence from i")
    p.add_argument("--preset", default="amber99sbildn-obc", choices=("amber99sbildn-obc", "amber14-obc1"))
    p.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="override the preset's temperature (e.g. hotter replicas for training data)")
    p.add_argument("--ns", type=float, required=True, help="production length per replica, ns")
    p.add_argument("--replicas", type=int, default=1, help="independent seeds, one process each")
    p.add_argument("--save-ps", type=float, default=1.0, help="ps between saved frames")
    p.add_argument("--warmup-ps", type=float, default=100.0, help="equilibration before saving")
    p.add_argument("--chunk-frames", type=int, default=1000, help="frames per trajectory chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_md)

    from . import cli_model  # train / sample / evaluate / bench live beside this file

    cli_model.add_commands(sub, UsageError)
    return parser


def main(argv=None):
    parser = build_parser()

    def one_line_error(message):
        parser_prog = parser.prog
        sys.stderr.write(f"{parser_prog}: error: {message}\n")
        sys.exit(2)

    parser.error = one_line_error
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sp in action.choices.values():
            sp.error = one_line_error
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.func(args)
    except UsageError as e:
        sys.stderr.write(f"arbg {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
