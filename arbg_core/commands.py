"""What each `arbg` command does (the parser is `cli.py`): read flags, call the package, print
one line. Bad input raises `UsageError` (one line on stderr, exit code 2), and everything that
can be checked (flags, device, model, reference, output folder) is checked before sampling or
MD starts. `sample` and `evaluate` build their --out folder out of sight and put it in place
whole (`files.output_folder`): a kill leaves the old result or the new one, never a mix."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .errors import UsageError, one_line
from .flags import config_from


def is_main_process() -> bool:
    """False on the other ranks of a torchrun job: only rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"


def tqdm_progress(total, desc, unit="it"):
    """A tqdm bar and a progress(done, total, info) callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
               disable=not is_main_process())

    def progress(done, total_, info=None):
        if total_ != bar.total:
            bar.reset(total=total_)
        if info:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                             for k, v in info.items() if v is not None}, refresh=False)
        bar.update(done - bar.n)  # tqdm throttles redraws itself

    return bar, progress


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


# ----------------------------------------------------------------------------- build and md


def cmd_build(args):
    from . import peptide

    pep = _build(args.sequence, args.termini)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pep.to_mdtraj().save_pdb(str(out))
    his = f", histidines: {', '.join(pep.histidine_states)}" if pep.histidine_states else ""
    print(f"{peptide.system_name(pep.sequence, pep.termini)}: {pep.n_atoms} atoms, "
          f"{len(pep.residue_blocks)} residues{his} -> {out}")


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


def _md_replica(job):
    _md_one(*job)


def _md_corpus(args, config, out):
    """Corpus mode: every sequence of --sequences in this shard, one after another."""
    from .data import read_sequence_list
    from .files import write_json

    try:
        listed = read_sequence_list(args.sequences)
    except (OSError, ValueError) as e:
        raise UsageError(f"--sequences: {one_line(e)}") from None
    seqs = [s for s, _ in listed]
    i, n = _parse_shard(args.shard) if args.shard else (0, 1)
    jobs = [(s, args.termini, out / s, replace(config, seed=config.seed + k))
            for k, s in enumerate(seqs) if k % n == i]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", {"sequences": seqs, "termini": args.termini,
                                       "config": config.__dict__, "roles": dict(listed),
                                       "seeds": "seed + index in the sequence file"})
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


def cmd_md(args):
    import multiprocessing as mp

    from .md import MDConfig

    if (args.sequence is None) == (args.sequences is None):
        raise UsageError("give either SEQ or --sequences FILE")
    config, out = config_from(MDConfig, args), Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if args.sequences is not None:
        return _md_corpus(args, config, out)
    if args.replicas == 1:
        return _md_one(args.sequence, args.termini, out, config)
    jobs = [(args.sequence, args.termini, out / f"replica_{r:02d}",
             replace(config, seed=config.seed + r), r) for r in range(args.replicas)]
    with mp.get_context("spawn").Pool(args.replicas) as pool:
        pool.map(_md_replica, jobs)


# -------------------------------------------------------------------------- sample, evaluate


def check_device(name: str):
    """The torch device `name` means here (auto: CUDA when present); UsageError if there is no
    such device on this machine."""
    import torch

    from .sampling import resolve_device

    try:
        device = resolve_device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA device; use cpu or auto")
    return device


def load_model(name_or_path, device="auto"):
    """A checkpoint folder, or a shipped model's or one of yours by name (user_models.py),
    loaded on `device` (auto: CUDA when present)."""
    from . import checkpoint, user_models

    device = check_device(device)
    try:
        return checkpoint.load(user_models.resolve(name_or_path), device=device)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def system_for(loaded, sequence=None, termini=None):
    """The peptide a model samples: its own system, or a requested sequence it supports."""
    from . import peptide

    own = loaded.config.system
    if sequence is None:
        if own is None:
            raise UsageError("this model is transferable: give --sequence")
        sequence, termini = own.sequence, own.termini
    termini = termini or loaded.config.default_termini
    try:
        seq = peptide.normalize_sequence(sequence, termini)
        loaded.check_serves(seq, termini)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return peptide.build(seq, termini)


def model_for(args):
    """--model, or without it the first model, shipped or yours (ARBG_USER_MODELS_DIR), that
    serves --sequence (DESIGN §11 order: a per-system model of exactly that system, e.g. one
    refined for it, else a transferable one in its trained range)."""
    from . import peptide, user_models

    if args.model is not None:
        return load_model(args.model, args.device)
    if args.sequence is None:
        raise UsageError("give --model, or --sequence to pick a shipped model that covers it")
    termini = args.termini or "zwitterionic"
    try:
        names, listing = user_models.serving_names(
            peptide.normalize_sequence(args.sequence, termini), termini)
    except ValueError as e:
        raise UsageError(str(e)) from None
    entry = next(e for e in listing.entries if e.name == names[0])
    print(f"model: {entry.name} ({'yours' if listing.is_user(entry) else 'shipped'}"
          f"{', refined from ' + entry.refined_from if entry.refined_from else ''})")
    return load_model(entry.path, args.device)


def _sample_config(args, **overrides):
    from .pipeline import SampleConfig

    if args.method == "smc" and not getattr(args, "reweight", True):
        raise UsageError("--method smc weights particles as it grows them: drop --no-reweight")
    return config_from(SampleConfig, args, **overrides)


def _sample_with_bar(loaded, pep, cfg):
    """`pipeline.run_sampling` behind one tqdm bar that shows the current stage."""
    from .pipeline import run_sampling

    bar, progress = tqdm_progress(cfg.n, "sample", "samples")
    try:
        return run_sampling(loaded, pep, cfg, progress=lambda stage, done, total:
                            progress(done, total, {"stage": stage}))
    finally:
        bar.close()


def cmd_sample(args):
    from .files import output_folder
    from .pipeline import output_bytes, write_outputs

    cfg = _sample_config(args)
    loaded = model_for(args)
    pep = system_for(loaded, args.sequence, args.termini)
    with output_folder(args.out, "summary.json", output_bytes(cfg.n, pep.n_atoms)) as out:
        summary = write_outputs(_sample_with_bar(loaded, pep, cfg), out)
    ess = summary.get("ess")
    extra = f", ESS {ess:.1f} ({100 * summary['ess_fraction']:.2f}%)" if ess is not None else ""
    print(f"{args.n} samples of {pep.name}{extra} -> {args.out}")


def _reference_for(args, pep):
    """--reference (with --top): complete, finite, of the sampled system, long enough for --lag."""
    from .report import check_compatible, check_settings, load_reference
    from .trajectories import COORDINATES_ONLY

    if Path(args.reference).suffix.lower() in COORDINATES_ONLY and args.top is None:
        raise UsageError(f"--reference {args.reference} holds coordinates only: give its "
                         "topology with --top PDB")
    reference = load_reference(args.reference, args.top)
    try:
        check_compatible(reference, pep.topology)
        check_settings(reference.n_frames, args.lag, args.n_eval)
    except ValueError as e:
        raise UsageError(f"--reference {args.reference}: {e}") from None
    return reference


def cmd_evaluate(args):
    from .files import output_folder
    from .pipeline import output_bytes, write_outputs
    from .report import REPORT_BYTES, evaluate

    cfg = _sample_config(args, n=args.n_proposals)
    loaded = model_for(args)
    pep = system_for(loaded, args.sequence, args.termini)
    reference = _reference_for(args, pep)
    need = output_bytes(cfg.n, pep.n_atoms) + REPORT_BYTES
    with output_folder(args.out, "report.json", need) as out:
        result = _sample_with_bar(loaded, pep, cfg)
        write_outputs(result, out / "samples")
        report = evaluate(result, reference, out, lag=args.lag, n_eval=args.n_eval,
                          seed=args.seed).report
    m = report["metrics"]
    print(f"ESS {100 * report['sampling']['ess_fraction']:.2f}%  reweighted: E-W2 "
          f"{m['reweighted']['e_w2']:.3f} T-W2 {m['reweighted']['t_w2']:.3f} TICA-W2 "
          f"{m['reweighted']['tica_w2']:.3f} (noise floor {m['noise_floor']['e_w2']:.3f} / "
          f"{m['noise_floor']['t_w2']:.3f} / {m['noise_floor']['tica_w2']:.3f}) -> {args.out}")


def cmd_refine(args):
    from . import user_models
    from .refine import RefineConfig, refine_checkpoint

    try:  # a budget: steps, minutes, or both (whichever ends first)
        cfg = config_from(RefineConfig, args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    loaded = load_model(args.model, args.device)
    pep = system_for(loaded, args.sequence, args.termini)
    out = args.out or user_models.refined_folder(loaded.name, pep.sequence, pep.termini)
    bar, progress = tqdm_progress(1, "refine", "step")
    try:
        card = refine_checkpoint(loaded, pep, cfg, out, progress=lambda stage, done, total,
                                 info: progress(done, total, {"stage": stage} | info))
    finally:
        bar.close()
    print(f"{card['description']} -> {out}")


# -------------------------------------------------------------------------------------- bench


def cmd_bench(args):
    from .bench import available_benchmarks, run_benchmark

    names = args.names or available_benchmarks()
    unknown = set(names) - set(available_benchmarks())
    if unknown:
        raise UsageError(f"unknown benchmark {sorted(unknown)[0]!r}; available: "
                         f"{', '.join(available_benchmarks())}")
    for name in names:
        t0 = time.perf_counter()
        run_benchmark(name, args.out)
        print(f"{name}: {time.perf_counter() - t0:.0f} s -> {Path(args.out) / name}*.json")
