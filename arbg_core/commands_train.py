"""What `arbg train` does (the parser is `cli.py`): data from --data, a TrainConfig from the
flags (each checked as it is parsed), the device checked, then `train.train` or
`train.train_transferable`. With --resume it says whether it continues a run or starts fresh."""

from __future__ import annotations

from pathlib import Path

from .commands import check_device, is_main_process, tqdm_progress
from .errors import UsageError
from .flags import config_from


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

    # checkpoints are written at every validation unless --save-every says otherwise
    save_every = args.save_every if args.save_every is not None else args.val_every
    return config_from(TrainConfig, args, save_every=save_every)


def _print_sizes():
    import torch

    from .model import SIZES, ArBG, ModelConfig

    for name in SIZES:
        cfg = ModelConfig.preset(name)
        with torch.device("meta"):  # counts parameters without allocating them
            n = ArBG(cfg).num_params()
        print(f"{name:6s} {n / 1e6:8.2f}M parameters  (d={cfg.d_model}, layers={cfg.n_layers}, "
              f"heads={cfg.n_heads}, bins={cfg.n_bins})")


def _say_resume(out: str) -> None:
    """Whether --resume continues a run or finds none to continue (then training starts fresh)."""
    from . import train_state
    from .files import read_json
    from .loop import LEGACY_STATE_FILE

    state = Path(out) / train_state.STATE_DIR / "state.json"
    if state.is_file():
        print(f"--resume: resuming the run in {out} from step {read_json(state)['step']}")
    elif (Path(out) / LEGACY_STATE_FILE).is_file():
        print(f"--resume: resuming the run in {out} (an older train_state.pt)")
    else:
        print(f"--resume: no saved state in {out}: starting fresh at step 0")


def cmd_train(args):
    from .train import train

    if args.dry_run:
        return _print_sizes()
    check_device(args.device)
    if args.resume and args.out and is_main_process():
        _say_resume(args.out)
    if args.transferable:
        if not args.data or not args.out:
            raise UsageError("train needs --data and --out (or --dry-run)")
        return _train_transferable(args)
    if not args.data or not (args.out or args.save_data):
        raise UsageError("train needs --data and --out (or --save-data alone, or --dry-run)")
    data = _load_data(args)
    if args.save_data:
        if args.pack:  # fixed point, lzma: for a lent GPU machine (packed.py)
            from . import packed

            packed.save(data, args.save_data)
        else:
            data.save(args.save_data)
        print(f"dataset {data.meta['frames']} -> {args.save_data}")
        if not args.out:  # prepare once here, train elsewhere (e.g. a GPU machine)
            return
    bar, progress = tqdm_progress(args.steps, "train", "step")
    try:
        summary = train(data, args.out, _train_config(args), resume=args.resume,
                        device=args.device, progress=progress)
    finally:
        bar.close()
    if is_main_process():
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
    bar, progress = tqdm_progress(args.steps, "train", "step")
    try:
        summary = train_transferable(root, args.out, _train_config(args), resume=args.resume,
                                     device=args.device, progress=progress, stride=args.stride,
                                     corpus_dir=args.save_data)
    finally:
        bar.close()
    if is_main_process():
        lo, hi = summary["lengths"]
        print(f"transferable ({summary['termini']}, lengths {lo}-{hi}): best val NLL "
              f"{summary['best_val_nll']:.4f} nats/coord, {summary['tokens_per_s']:.0f} tokens/s "
              f"on {summary['device']} -> {args.out}")
