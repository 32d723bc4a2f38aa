"""Figures: robust axis ranges that outliers cannot stretch, what is left out counted on the
figure, consistent colours, a readable Ramachandran grid."""

import numpy as np
import pytest

from arbg_core import plots


def _texts(fig) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def test_weighted_quantile_matches_numpy_and_uses_weights():
    x = np.random.default_rng(0).normal(size=1001)
    assert plots.weighted_quantile(x, 0.5) == pytest.approx(np.median(x))
    w = np.zeros(1001)
    w[:10] = 1.0
    assert plots.weighted_quantile(x, [0.0, 1.0], w).tolist() == [x[:10].min(), x[:10].max()]
    assert np.isnan(plots.weighted_quantile(x, 0.5, np.zeros(1001)))


def test_energy_range_ignores_clashes_and_counts_them():
    rng = np.random.default_rng(1)
    u = np.concatenate([rng.normal(-20, 5, 1960), rng.uniform(1000, 16000, 40)])  # 2% clashes
    w = np.exp(-(u + 20) ** 2 / 50)
    ens = {"proposal": (u, None), "reweighted": (u, w / w.sum()), "reference": (rng.normal(-22, 5, 3000), None)}
    lo, hi = plots.robust_range(ens)
    assert -60 < lo < -35 and 0 < hi < 40  # the bulk, not the clashes
    fig = plots.energy_figure(ens)
    assert fig.layout.xaxis.range == (lo, hi)
    assert "proposal: 40 above" in _texts(fig)
    # every histogram puts its mass inside the axis (no curve squashed into one bin)
    for trace in fig.data:
        assert np.count_nonzero(trace.y) > 20
    assert [t.line.color for t in fig.data] == [plots.COLORS[k] for k in ("proposal", "reweighted", "reference")]


def test_no_note_when_everything_is_shown():
    x = np.random.default_rng(2).normal(size=500)
    fig = plots.energy_figure({"proposal": (x, None)})
    assert _texts(fig) == ""


def test_log_weight_figure_shows_where_the_weight_is():
    rng = np.random.default_rng(3)
    log_w = np.concatenate([rng.normal(0, 3, 1990), np.full(10, -5000.0)])  # far tail
    fig = plots.log_weight_figure(log_w)
    lo, hi = fig.layout.xaxis.range
    assert hi == 0 and -40 <= lo < -10
    assert "not shown: 10 samples below" in fig.layout.xaxis.title.text
    mass = next(t for t in fig.data if t.name == "share of the weight")
    assert np.sum(mass.y) == pytest.approx(1.0, abs=1e-9)  # the far tail carries nothing
    cum = next(t for t in fig.data if t.name == "top-k")
    assert cum.y[-1] == pytest.approx(1.0) and np.all(np.diff(cum.y) >= 0)


def test_ramachandran_grid_is_readable():
    rng = np.random.default_rng(4)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 500, 3))
    ens = {"proposal": ((phi, psi), None), "reweighted": ((phi, psi), np.ones(500) / 500),
           "reference (shipped MD)": ((phi, psi), None)}
    fig = plots.ramachandran_figure(ens, ["ALA2", "ALA3", "ALA4"])
    assert fig.layout.width >= 3 * plots.PANEL_PX and fig.layout.height >= 3 * plots.PANEL_PX
    for axis in (fig.layout.xaxis, fig.layout.yaxis5):
        assert list(axis.tickvals) == [-180, -90, 0, 90, 180]
    titles = [a.text for a in fig.layout.annotations]
    assert titles == list(ens) + ["ALA2", "ALA3", "ALA4"]  # columns on top, rows on the side
    # panels do not overlap: vertical gaps between the y domains of consecutive rows
    doms = sorted(fig.layout[f"yaxis{'' if i == 1 else i}"].domain for i in (1, 4, 7))
    assert all(b[0] - a[1] > 0.03 for a, b in zip(doms, doms[1:]))


def test_colors_by_label():
    assert plots.color_of("reference (your MD)") == plots.COLORS["reference"]
    assert plots.color_of("proposal (model)") == plots.COLORS["proposal"]
    assert len(set(plots.COLORS.values())) == 3


def test_pngs(tmp_path):
    rng = np.random.default_rng(5)
    u = np.concatenate([rng.normal(size=300), [1e4]])
    plots.save_png_energy(tmp_path / "e.png", {"proposal": (u, None), "reweighted": (u, np.ones(301) / 301)})
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 300, 1))
    plots.save_png_ramachandran(tmp_path / "r.png", {"proposal": ((phi, psi), None)}, ["ALA2"])
    assert (tmp_path / "e.png").stat().st_size > 1000 and (tmp_path / "r.png").stat().st_size > 1000
