"""The recipe ablation's command lines are ones the real CLI accepts, with each variant's recipe."""

from pathlib import Path

from arbg_core.ablation import VARIANTS, Setup, commands
from arbg_core.cli import build_parser


def test_every_variant_parses_with_its_recipe():
    setup = Setup("ala2", "data/ala2_t300", "assets/reference/ala2.npz", steps=40)
    parser = build_parser()
    for v in VARIANTS.values():
        train, evaluate = commands(setup, v, Path("runs/x"))
        t = parser.parse_args(train[3:])
        assert (t.frame, t.n_bins, t.optimizer, t.lr, t.steps) == (v.frame, v.bins, v.optimizer, v.lr, 40)
        e = parser.parse_args(evaluate[3:])
        assert e.n_proposals == setup.n_proposals and e.model.endswith(f"ala2_{v.name}/best")
    assert len({(v.frame, v.bins, v.optimizer) for v in VARIANTS.values()}) == len(VARIANTS)
