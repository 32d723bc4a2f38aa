"""Figures shared by the app (plotly) and `arbg evaluate` (plotly HTML + matplotlib PNG).

Every function takes plain arrays: `ensembles` maps a label ("proposal", "reweighted",
"reference") to (values, weights or None). Free energies are in kT, angles in degrees on axes.
"""

from __future__ import annotations

import numpy as np

from .metrics import ramachandran

FE_MAX_KT = 8.0  # colour scale cap for free-energy maps, same for every panel


def _weights(w, n):
    return np.ones(n) / max(n, 1) if w is None else np.asarray(w, np.float64) / max(np.sum(w), 1e-300)


def _capped(f: np.ndarray) -> np.ndarray:
    """Free energies up to FE_MAX_KT; emptier bins become NaN (drawn blank).

    Reweighted histograms put tiny weights in many bins: drawing those at the cap would paint
    the map with bins that hold almost no probability."""
    return np.where(np.isfinite(f) & (f <= FE_MAX_KT), f, np.nan)


def ramachandran_maps(ensembles: dict, bins: int = 60) -> dict:
    """label -> {"edges", "free_energy" (R, bins, bins)} from (phi, psi) (n, R) rad + weights."""
    out = {}
    for label, (angles, w) in ensembles.items():
        phi, psi = angles
        out[label] = ramachandran(phi, psi, None if w is None else np.asarray(w), bins=bins)
    return out


def ramachandran_figure(ensembles: dict, residue_labels: list[str], bins: int = 60):
    """Plotly grid: one row per residue, one column per ensemble, shared colour scale."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    maps = ramachandran_maps(ensembles, bins)
    labels = list(maps)
    n_res = len(residue_labels)
    fig = make_subplots(rows=n_res, cols=len(labels), horizontal_spacing=0.04, vertical_spacing=0.06,
                        subplot_titles=[f"{lab} — {res}" for res in residue_labels for lab in labels])
    for c, lab in enumerate(labels):
        edges = np.degrees(maps[lab]["edges"])
        centers = 0.5 * (edges[1:] + edges[:-1])
        for r in range(n_res):
            f = _capped(maps[lab]["free_energy"][r]).T  # rows = psi; empty bins blank
            fig.add_trace(go.Heatmap(x=centers, y=centers, z=f, zmin=0, zmax=FE_MAX_KT,
                                     colorscale="Viridis", showscale=(c == 0 and r == 0),
                                     colorbar=dict(title="F / kT"),
                                     hovertemplate="φ %{x:.0f}°, ψ %{y:.0f}°: %{z:.2f} kT<extra></extra>"),
                          row=r + 1, col=c + 1)
            fig.update_xaxes(range=[-180, 180], title_text="φ (°)", row=r + 1, col=c + 1)
            fig.update_yaxes(range=[-180, 180], title_text="ψ (°)", row=r + 1, col=c + 1)
    fig.update_layout(height=320 * n_res + 60, margin=dict(l=40, r=20, t=60, b=40))
    return fig


def energy_figure(ensembles: dict, bins: int = 80):
    """Overlaid normalized histograms of reduced energy (kT)."""
    import plotly.graph_objects as go

    finite = [np.asarray(u)[np.isfinite(u)] for u, _ in ensembles.values()]
    pooled = np.concatenate([f for f in finite if len(f)]) if any(len(f) for f in finite) else np.zeros(1)
    lo, hi = np.percentile(pooled, [0.5, 99.5])
    edges = np.linspace(lo, hi, bins + 1)
    fig = go.Figure()
    for label, (u, w) in ensembles.items():
        u = np.asarray(u, np.float64)
        ok = np.isfinite(u)
        weights = _weights(None if w is None else np.asarray(w)[ok], ok.sum())
        h, _ = np.histogram(u[ok], bins=edges, weights=weights)
        fig.add_trace(go.Scatter(x=0.5 * (edges[1:] + edges[:-1]), y=h / np.diff(edges),
                                 mode="lines", line_shape="hvh", name=label))
    fig.update_layout(xaxis_title="reduced energy u = E/kT", yaxis_title="density",
                      height=380, margin=dict(l=40, r=20, t=30, b=40))
    return fig


def log_weight_figure(log_w: np.ndarray):
    """Distribution of finite log weights and the cumulative weight of the top-k samples."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    lw = np.asarray(log_w, np.float64)
    lw = lw[np.isfinite(lw)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("log w (shifted to max 0)",
                                                        "cumulative weight of the top-k samples"))
    if len(lw):
        shifted = lw - lw.max()
        fig.add_trace(go.Histogram(x=shifted, nbinsx=80, name="log w"), row=1, col=1)
        w = np.sort(np.exp(shifted))[::-1]
        cum = np.cumsum(w) / w.sum()
        k = np.arange(1, len(w) + 1)
        fig.add_trace(go.Scatter(x=k, y=cum, mode="lines", name="top-k"), row=1, col=2)
        fig.update_xaxes(type="log", title_text="k", row=1, col=2)
    fig.update_layout(height=360, showlegend=False, margin=dict(l=40, r=20, t=40, b=40))
    return fig


def save_png_ramachandran(path, ensembles: dict, residue_labels: list[str], bins: int = 60):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = ramachandran_maps(ensembles, bins)
    labels = list(maps)
    n_res = len(residue_labels)
    fig, axes = plt.subplots(n_res, len(labels), figsize=(3.6 * len(labels) + 1, 3.3 * n_res),
                             squeeze=False, layout="constrained")
    for c, lab in enumerate(labels):
        edges = np.degrees(maps[lab]["edges"])
        for r in range(n_res):
            f = np.ma.masked_invalid(_capped(maps[lab]["free_energy"][r]).T)
            im = axes[r, c].pcolormesh(edges, edges, f, vmin=0, vmax=FE_MAX_KT, cmap="viridis")
            axes[r, c].set_title(f"{lab} — {residue_labels[r]}", fontsize=9)
            axes[r, c].set_xlabel("φ (°)")
            axes[r, c].set_ylabel("ψ (°)")
    fig.colorbar(im, ax=axes, label="F / kT", shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_png_energy(path, ensembles: dict, bins: int = 80):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    finite = [np.asarray(u)[np.isfinite(u)] for u, _ in ensembles.values()]
    pooled = np.concatenate([f for f in finite if len(f)])
    edges = np.linspace(*np.percentile(pooled, [0.5, 99.5]), bins + 1)
    for label, (u, w) in ensembles.items():
        u = np.asarray(u, np.float64)
        ok = np.isfinite(u)
        ax.hist(u[ok], bins=edges, weights=_weights(None if w is None else np.asarray(w)[ok], ok.sum()),
                density=True, histtype="step", label=label)
    ax.set_xlabel("reduced energy u = E/kT")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
