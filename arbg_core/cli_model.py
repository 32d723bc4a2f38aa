"""`arbg train | sample | evaluate | bench`: the model-side commands of the CLI."""

from __future__ import annotations

import os
import time
from pathlib import Path

UsageError = Exception  # replaced by cli.UsageError in add_commands


def _is_main_process() -> bool:
    """False on the other ranks of a torchrun job: only rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"


def _tqdm_progress(total, desc, unit="it"):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True,
               disable=not _is_main_process())

    def progress(done, total_, info=None):
        if total_ != bar.total:
            bar.reset(total=total_)
        if info:
            bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                             for k, v in info.items() if v is not None}, refresh=False)
        bar.update(done - bar.n)  # tqdm throttles redraws itself

    return bar, progress


def _load_data(args):
    from . import data as data_mod
    from .peptide import identify

    sources = list(args.data)
    if len(sources) == 1 and sources[0].endswith(".npz"):
        return data_mod.FrameData.load(sources[0])
    for s in sources:
        if not Path(data_mod.parse_source(s)[0]).exists():
            raise UsageError(f"--data {s}: no such file or folder")
    try:
        fractions = tuple(float(f) for f in args.split.split(","))
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--split must be three fractions summing to 1, got {args.split!r}") from None
    fd = data_mod.prepare(sources, top=args.top, stride=args.stride, fractions=fractions)
    seq, termini = identify(fd.topology)
    fd.meta["system"] = {"sequence": seq, "termini": termini, "preset": args.preset}
    return fd


def _train_config(args):
    from .train import TrainConfig

    return TrainConfig(size=args.size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       optimizer=args.optimizer, seed=args.seed, n_bins=args.bins,
                       val_every=args.val_every, save_every=args.val_every, bf16=args.bf16,
                       init=args.init)


def cmd_train(args):
    from .model import ArBG, ModelConfig
    from .train import train

    if args.dry_run:
        for name in ("tiny", "small", "base", "large"):
            cfg = ModelConfig.preset(name)
            n = ArBG(cfg).num_params() if name != "large" else _count_large(cfg)
            print(f"{name:6s} {n / 1e6:8.2f}M parameters  (d={cfg.d_model}, layers={cfg.n_layers}, "
                  f"heads={cfg.n_heads}, bins={cfg.n_bins})")
        return
    if args.transferable:
        if not args.data or not args.out:
            raise UsageError("train needs --data and --out (or --dry-run)")
        return _train_transferable(args)
    if not args.data or not (args.out or args.save_data):
        raise UsageError("train needs --data and --out (or --save-data alone, or --dry-run)")
    data = _load_data(args)
    if args.save_data:
        data.save(args.save_data)
        print(f"dataset {data.meta['frames']} -> {args.save_data}")
        if not args.out:  # prepare once here, train elsewhere (e.g. a GPU machine)
            return
    bar, progress = _tqdm_progress(args.steps, "train", "step")
    try:
        summary = train(data, args.out, _train_config(args), resume=args.resume,
                        device=args.device, progress=progress)
    finally:
        bar.close()
    if _is_main_process():
        print(f"best val NLL {summary['best_val_nll']:.4f} nats/coord, "
              f"{summary['tokens_per_s']:.0f} tokens/s on {summary['device']} -> {args.out}")


def _train_transferable(args):
    """--data is a prepared corpus or an `arbg md --sequences` folder (prepared on the fly into
    --save-data, default OUT/corpus)."""
    from .data import Corpus
    from .train import train_transferable

    root = Path(args.data[0])
    marks = ("corpus.json", "manifest.json")
    if len(args.data) != 1 or not any((root / f).is_file() for f in marks):
        raise UsageError("--transferable takes one --data folder: a prepared corpus (corpus.json) "
                         "or an `arbg md --sequences` output folder (manifest.json)")
    if (root / "corpus.json").is_file():
        try:
            root = Corpus(root)
        except ValueError as e:
            raise UsageError(str(e)) from None
    bar, progress = _tqdm_progress(args.steps, "train", "step")
    try:
        summary = train_transferable(root, args.out, _train_config(args), resume=args.resume,
                                     device=args.device, progress=progress, stride=args.stride,
                                     corpus_dir=args.save_data)
    finally:
        bar.close()
    if _is_main_process():
        lo, hi = summary["lengths"]
        print(f"transferable ({summary['termini']}, lengths {lo}-{hi}): best val NLL "
              f"{summary['best_val_nll']:.4f} nats/coord, {summary['tokens_per_s']:.0f} tokens/s "
              f"on {summary['device']} -> {args.out}")


def _count_large(cfg):
    import torch

    from .model import ArBG

    with torch.device("meta"):
        return ArBG(cfg).num_params()


def load_model(name_or_path, device="cpu"):
    from . import checkpoint

    try:
        return checkpoint.load(checkpoint.resolve(name_or_path), device=device)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def system_for(loaded, sequence=None, termini=None):
    """The peptide a model samples: its own system, or a requested sequence it supports."""
    from . import checkpoint, peptide

    own = loaded.config.get("system")
    if sequence is None:
        if own is None:
            raise UsageError("this model is transferable: give --sequence")
        sequence, termini = own["sequence"], own["termini"]
    termini = (termini or (own or {}).get("termini")
               or (loaded.config.get("extra") or {}).get("termini") or "zwitterionic")
    try:
        seq = peptide.normalize_sequence(sequence, termini)
        checkpoint.check_serves(loaded.config, seq, termini, loaded.path.name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return peptide.build(seq, termini)


def _smc_options(args) -> dict:
    if not 0.0 <= args.smc_threshold <= 1.0:
        raise UsageError(f"--smc-threshold must be in [0, 1], got {args.smc_threshold}")
    if args.method == "smc" and getattr(args, "no_reweight", False):
        raise UsageError("--method smc weights particles as it grows them: drop --no-reweight")
    return {"smc_threshold": args.smc_threshold, "smc_schedule": args.smc_schedule}


def _sample_with_bar(loaded, pep, cfg):
    """`pipeline.run_sampling` behind one tqdm bar that shows the current stage."""
    from .pipeline import run_sampling

    bar, progress = _tqdm_progress(cfg.n, "sample", "samples")
    try:
        return run_sampling(loaded, pep, cfg, progress=lambda stage, done, total:
                            progress(done, total, {"stage": stage}))
    finally:
        bar.close()


def model_for(args):
    """--model, or without it the first shipped model that serves --sequence (DESIGN §11 order:
    a per-system model of exactly that system, else a transferable one in its trained range)."""
    from . import checkpoint, peptide

    if args.model is not None:
        return load_model(args.model)
    if args.sequence is None:
        raise UsageError("give --model, or --sequence to pick a shipped model that covers it")
    termini = args.termini or "zwitterionic"
    try:
        name = checkpoint.shipped_for(peptide.normalize_sequence(args.sequence, termini), termini)[0]
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"model: {name} (shipped)")
    return load_model(name)


def cmd_sample(args):
    from .pipeline import SampleConfig, write_outputs

    loaded = model_for(args)
    pep = system_for(loaded, args.sequence, args.termini)
    cfg = SampleConfig(n=args.n, batch_size=args.batch_size, tau=args.temperature, seed=args.seed,
                       device=args.device, use_kv_cache=not args.no_kv_cache, method=args.method,
                       reweight=not args.no_reweight, **_smc_options(args))
    result = _sample_with_bar(loaded, pep, cfg)
    summary = write_outputs(result, args.out)
    ess = summary.get("ess")
    extra = f", ESS {ess:.1f} ({100 * summary['ess_fraction']:.2f}%)" if ess is not None else ""
    print(f"{args.n} samples of {pep.name}{extra} -> {args.out}")


def cmd_evaluate(args):
    from .pipeline import SampleConfig, write_outputs
    from .report import evaluate, load_reference

    loaded = model_for(args)
    pep = system_for(loaded, args.sequence, args.termini)
    try:
        reference = load_reference(args.reference, args.top)
    except (OSError, ValueError) as e:
        raise UsageError(f"--reference {args.reference}: {e}") from None
    cfg = SampleConfig(n=args.n_proposals, batch_size=args.batch_size, tau=args.temperature,
                       seed=args.seed, device=args.device, method=args.method,
                       **_smc_options(args))
    result = _sample_with_bar(loaded, pep, cfg)
    write_outputs(result, Path(args.out) / "samples")
    try:
        report = evaluate(result, reference, args.out, lag=args.lag, n_eval=args.n_eval,
                          seed=args.seed).report
    except ValueError as e:
        raise UsageError(str(e)) from None
    m = report["metrics"]
    print(f"ESS {100 * report['sampling']['ess_fraction']:.2f}%  reweighted: E-W2 "
          f"{m['reweighted']['e_w2']:.3f} T-W2 {m['reweighted']['t_w2']:.3f} TICA-W2 "
          f"{m['reweighted']['tica_w2']:.3f} (noise floor {m['noise_floor']['e_w2']:.3f} / "
          f"{m['noise_floor']['t_w2']:.3f} / {m['noise_floor']['tica_w2']:.3f}) -> {args.out}")


BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def available_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def cmd_bench(args):
    import importlib.util

    names = args.names or available_benchmarks()
    unknown = set(names) - set(available_benchmarks())
    if unknown:
        raise UsageError(f"unknown benchmark {sorted(unknown)[0]!r}; available: "
                         f"{', '.join(available_benchmarks()) or 'none (run from a source checkout)'}")
    for name in names:
        spec = importlib.util.spec_from_file_location(f"arbg_bench_{name}", BENCH_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        t0 = time.perf_counter()
        module.run(out_dir=args.out)
        print(f"{name}: {time.perf_counter() - t0:.0f} s -> {Path(args.out) / name}*.json")


def _add_sampling_flags(p, default_batch):
    """Flags shared by `sample` and `evaluate` (names fixed by DESIGN §14)."""
    p.add_argument("--model", metavar="DIR", help="checkpoint folder or shipped name (default: the "
                   "shipped model that covers --sequence, per-system first, then transferable)")
    p.add_argument("--sequence", metavar="SEQ")
    p.add_argument("--termini", choices=("zwitterionic", "capped"))
    p.add_argument("--batch-size", type=int, default=default_batch)
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature tau (default: the model card's)")
    p.add_argument("--method", choices=("snis", "smc"), default="snis")
    p.add_argument("--smc-threshold", type=float, default=0.5, metavar="F",
                   help="SMC: resample when the normalized ESS falls below F (0: never)")
    p.add_argument("--smc-schedule", choices=("constant", "linear"), default="constant",
                   help="SMC twist exp(-lambda_r u_r): lambda_r = 1 or r/R")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def add_commands(sub, usage_error):
    """Register the model-side subcommands on the `arbg` parser."""
    global UsageError
    UsageError = usage_error

    p = sub.add_parser("train", help="train a model on MD frames",
                       description="Train a per-system model, or with --transferable a "
                                   "sequence-conditioned one on a corpus. Rerun with --resume to "
                                   "continue. Under torchrun it trains data-parallel (DDP).")
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="arbg md folders (PATH:N keeps each replica's first N frames), trajectory "
                        "files (with --top) or one prepared .npz; "
                        "with --transferable one corpus folder or `arbg md --sequences` folder")
    p.add_argument("--top", metavar="PDB", help="topology for trajectory files")
    p.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TR,VA,TE",
                   help="time-block fractions of each replica for train, validation and test")
    p.add_argument("--preset", default="amber99sbildn-obc", help="force field the data came from")
    p.add_argument("--transferable", action="store_true",
                   help="sequence-conditioned model on a corpus (fixed std, a = 4.5)")
    p.add_argument("--size", choices=("tiny", "small", "base", "large"), default="small")
    p.add_argument("--bins", type=int, default=None, help="bins per coordinate (default: size's)")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast; auto: on CUDA, and on CPUs with fast bf16 matmuls (AMX)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this checkpoint's weights with a fresh optimizer and schedule "
                        "(same --size and data scale), e.g. a second, annealing stage")
    p.add_argument("--save-data", metavar="FILE.npz",
                   help="also write the prepared dataset (--transferable: the corpus folder to "
                        "prepare into, default OUT/corpus)")
    p.add_argument("--dry-run", action="store_true", help="print parameter counts and exit")
    p.add_argument("--out", metavar="DIR")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples, reweight to the Boltzmann distribution")
    _add_sampling_flags(p, default_batch=1024)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--no-kv-cache", action="store_true", help="re-encode the prefix (benchmarks)")
    p.add_argument("--no-reweight", action="store_true", help="skip energies and weights")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="sample, reweight and compare with reference MD")
    _add_sampling_flags(p, default_batch=1024)
    p.add_argument("--reference", required=True, metavar="TRAJ",
                   help="trajectory file, arbg md folder, or prepared .npz (its test split)")
    p.add_argument("--top", metavar="PDB", help="topology for a trajectory file")
    p.add_argument("--n-proposals", type=int, default=100_000)
    p.add_argument("--n-eval", type=int, default=10_000, help="samples and frames compared")
    p.add_argument("--lag", type=int, default=10, help="TICA lag in reference frames")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="run benchmarks, results as JSON",
                       description="Benchmarks from the bench/ folder; each writes OUT/NAME*.json.")
    p.add_argument("names", nargs="*", metavar="NAME", help="which ones (default: all)")
    p.add_argument("--out", default="results", metavar="DIR")
    p.set_defaults(func=cmd_bench)
