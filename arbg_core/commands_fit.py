"""`arbg fit SEQ --out DIR`: the parser and what the command does (the pipeline is fit.py).

Flags are the fields of `fit_plan.FitConfig`. Bad input (a sequence, a setting, a device this
machine lacks, a folder that holds another fit or something else) is one line and exit code 2
before any work starts; a rerun of the same command continues the fit where it stopped.
"""

from __future__ import annotations

from .errors import UsageError
from .flags import add_config_flags, config_from


def add_parser(sub):
    from .fit_plan import RENAMED, FitConfig
    from .model import SIZES
    from .peptide import TERMINI

    p = sub.add_parser(
        "fit", help="build a model for a sequence: MD, training, tau, evaluation, card",
        description="One resumable pipeline for any sequence: reference MD (the preset's "
                    "temperature plus a hot replica), packed data, training sized to the "
                    "budget, tau tuning, evaluation against held-back MD with noise floors, a "
                    "card and DIR/model for `arbg sample --model DIR/model`. The plan (stages, "
                    "estimated time here from measured rates) is printed first and kept in "
                    "DIR/plan.json. Rerun the same command to continue after a stop or a kill.")
    p.add_argument("sequence", metavar="SEQ", help="one-letter codes, e.g. YGGFL")
    p.add_argument("--termini", choices=TERMINI, default="zwitterionic",
                   help="free NH3+/COO- ends (zwitterionic) or ACE/NME caps")
    add_config_flags(p, FitConfig, rename=RENAMED, choices={"size": SIZES})
    p.add_argument("--out", required=True, metavar="DIR", help="the fit folder (new, or the "
                   "folder of an earlier run of the same command)")
    p.add_argument("--plan-only", action="store_true", help="measure the rates, print and "
                   "write the plan, and stop (the same command without it then runs the plan)")
    p.add_argument("--md-shard", metavar="i/n", help="MD over several machines: run only every "
                   "n-th MD replica from i and stop. Make the plan first (--plan-only) and copy "
                   "DIR to each machine; then copy DIR/md back and rerun without this flag")
    p.set_defaults(func=cmd_fit)
    return p


def cmd_fit(args) -> None:
    from .commands import check_device
    from .fit import run_fit
    from .fit_plan import FitConfig
    from .peptide import normalize_sequence

    try:
        cfg = config_from(FitConfig, args)
        sequence = normalize_sequence(args.sequence, args.termini)
    except ValueError as e:
        raise UsageError(str(e)) from None
    check_device(cfg.device)
    if args.md_shard:
        from .commands import _parse_shard
        from .fit import run_md_shard

        try:
            done = run_md_shard(args.out, sequence, args.termini, cfg, _parse_shard(args.md_shard))
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(f"MD shard {args.md_shard}: {', '.join(done)} done; copy them into the fit "
              "folder of the machine that runs the rest")
        return
    try:
        fit = run_fit(args.out, sequence, args.termini, cfg, plan_only=args.plan_only)
    except ValueError as e:  # the folder, a setting the plan cannot meet
        raise UsageError(str(e)) from None
    if args.plan_only:
        print(f"plan -> {fit.path('plan.json')}; rerun without --plan-only to run it")
        return
    record = fit.state["done"]["model"]
    print(f"done: {fit.path('model')} (tau {record['tau']}, ESS "
          f"{100 * (record['ess_fraction'] or 0):.2f}% on held-back MD); sample with\n"
          f"  arbg sample --model {fit.path('model')} --n 1000 --out samples")
