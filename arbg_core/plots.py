"""Figures shared by the app (plotly) and `arbg evaluate` (plotly HTML + matplotlib PNG).

Every function takes plain arrays: `ensembles` maps a label ("proposal", "reweighted",
"reference ...") to (values, weights or None). Free energies are in kT, angles in degrees on axes.

Axes never stretch to outliers: a range comes from robust quantiles of every ensemble (weighted
ones by their weights), and what falls outside is counted on the figure, so a single clash at
u ~ 5,000 kT can neither squash the plot nor vanish silently.
"""

from __future__ import annotations

import numpy as np

from .metrics import ramachandran

FE_MAX_KT = 8.0  # colour scale cap for free-energy maps, same for every panel
ANGLE_TICKS = [-180, -90, 0, 90, 180]
# Okabe-Ito colours (distinct for colour-blind readers), one per kind of ensemble, on every page.
COLORS = {"proposal": "#E69F00", "reweighted": "#0072B2", "reference": "#333333"}
PANEL_PX = 240  # side of one Ramachandran panel (three fit a 1280-px window with the sidebar)
LOG_W_FLOOR = -40.0  # log w - max below this: weight < 5e-18 of the largest, never drawn


def color_of(label: str) -> str | None:
    """The colour of an ensemble label by its first word: proposal, reweighted or reference."""
    return next((c for k, c in COLORS.items() if label.lower().startswith(k)), None)


def _weights(w, n):
    return np.ones(n) / max(n, 1) if w is None else np.asarray(w, np.float64) / max(np.sum(w), 1e-300)


def weighted_quantile(x: np.ndarray, q, w: np.ndarray | None = None) -> np.ndarray:
    """Quantiles q (in [0, 1]) of x (n,) under weights w (n,) or uniform; NaN when no mass."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return np.full(np.shape(q), np.nan)
    order = np.argsort(x[ok], kind="stable")
    xs, ws = x[ok][order], w[ok][order]
    cum = np.cumsum(ws) / ws.sum()
    return xs[np.minimum(np.searchsorted(cum, q, side="left"), len(xs) - 1)]


def robust_range(ensembles: dict, fence: float = 3.0, pad: float = 0.04) -> tuple[float, float]:
    """(lo, hi) covering every ensemble's bulk: per ensemble the interval [Q1 - fence IQR,
    Q3 + fence IQR] (Tukey's far-out fences; weighted quantiles for weighted ensembles) cut to
    its data, then the union over ensembles, padded. Outliers (a few clashes) cannot stretch it;
    data without outliers is shown whole."""
    los, his = [], []
    for x, w in ensembles.values():
        q0, q1, q3, q4 = weighted_quantile(x, [0.0, 0.25, 0.75, 1.0], w)
        if np.isnan(q0):
            continue
        iqr = q3 - q1
        los.append(max(q0, q1 - fence * iqr))
        his.append(min(q4, q3 + fence * iqr))
    if not los:
        return 0.0, 1.0
    lo, hi = min(los), max(his)
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def outside_note(ensembles: dict, lo: float, hi: float, unit: str = "") -> str:
    """'Not shown: proposal 37 samples above 85 kT; ...' for what falls outside [lo, hi];
    weighted ensembles by their share of the weight. Empty when everything is inside."""
    parts = []
    for label, (x, w) in ensembles.items():
        x = np.asarray(x, np.float64)
        w_n = _weights(w, len(x))
        below, above = x < lo, x > hi
        for side, mask, edge in (("below", below, lo), ("above", above, hi)):
            if not mask.any():
                continue
            if w is None:
                parts.append(f"{label}: {int(mask.sum()):,} {side} {edge:.4g}{unit}")
            elif w_n[mask].sum() > 0:
                share = w_n[mask].sum()
                share_text = f"{share:.2%}" if share >= 1e-4 else f"{share:.1e}"
                parts.append(f"{label}: {share_text} of the weight {side} {edge:.4g}{unit}")
    return ("Not shown (outside the axis): " + "; ".join(parts)) if parts else ""


def _note(fig, text: str) -> None:
    if text:
        fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=1.0, xanchor="left",
                           yanchor="bottom", showarrow=False, font=dict(size=11, color="#555"))


# ------------------------------------------------------------------------------ Ramachandran


def ramachandran_maps(ensembles: dict, bins: int = 60) -> dict:
    """label -> {"edges", "free_energy" (R, bins, bins)} from (phi, psi) (n, R) rad + weights."""
    out = {}
    for label, (angles, w) in ensembles.items():
        phi, psi = angles
        out[label] = ramachandran(phi, psi, None if w is None else np.asarray(w), bins=bins)
    return out


def _capped(f: np.ndarray) -> np.ndarray:
    """Free energies up to FE_MAX_KT; emptier bins become NaN (drawn blank).

    Reweighted histograms put tiny weights in many bins: drawing those at the cap would paint
    the map with bins that hold almost no probability."""
    return np.where(np.isfinite(f) & (f <= FE_MAX_KT), f, np.nan)


def ramachandran_figure(ensembles: dict, residue_labels: list[str], bins: int = 60):
    """Plotly grid of square panels (PANEL_PX): a column per ensemble (titled on top), a row per
    residue (titled on the right), shared colour scale, ticks every 90 degrees. The figure has
    its own width: show it with width="content"."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    maps = ramachandran_maps(ensembles, bins)
    labels, n_res = list(maps), len(residue_labels)
    gap_px, top_px, bottom_px = 56, 50, 50
    height = n_res * PANEL_PX + (n_res - 1) * gap_px + top_px + bottom_px
    width = len(labels) * (PANEL_PX + 70) + 150
    fig = make_subplots(rows=n_res, cols=len(labels), horizontal_spacing=70 / width,
                        vertical_spacing=gap_px / height, column_titles=labels,
                        row_titles=residue_labels)
    for c, lab in enumerate(labels):
        centers = np.degrees(0.5 * (maps[lab]["edges"][1:] + maps[lab]["edges"][:-1]))
        for r in range(n_res):
            f = _capped(maps[lab]["free_energy"][r]).T  # rows = psi; empty bins blank
            fig.add_trace(go.Heatmap(x=centers, y=centers, z=f, zmin=0, zmax=FE_MAX_KT,
                                     colorscale="Viridis", showscale=(c == 0 and r == 0),
                                     colorbar=dict(title="F / kT", len=min(1.0, 400 / height)),
                                     hovertemplate="φ %{x:.0f}°, ψ %{y:.0f}°: %{z:.2f} kT<extra></extra>"),
                          row=r + 1, col=c + 1)
    fig.update_xaxes(range=[-180, 180], tickvals=ANGLE_TICKS, constrain="domain")
    fig.update_yaxes(range=[-180, 180], tickvals=ANGLE_TICKS, constrain="domain")
    for i in range(1, n_res * len(labels) + 1):  # square panels even when the page is narrower
        fig.layout[f"yaxis{i if i > 1 else ''}"].scaleanchor = f"x{i if i > 1 else ''}"
    fig.update_xaxes(title_text="φ (°)", row=n_res)
    fig.update_yaxes(title_text="ψ (°)", col=1)
    fig.update_annotations(font_size=13)
    fig.update_layout(height=height, width=width, margin=dict(l=60, r=110, t=top_px, b=bottom_px))
    return fig


# ---------------------------------------------------------------------------------- energies


def _histogram(x, w, edges):
    """Density of x (n,) in edges, normalized by the ensemble's total mass (mass outside the
    edges is not redistributed, so the curves stay comparable)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    weights = _weights(None if w is None else np.asarray(w)[ok], ok.sum())
    h, _ = np.histogram(x[ok], bins=edges, weights=weights)
    return h / np.diff(edges)


def energy_figure(ensembles: dict, bins: int = 80):
    """Overlaid normalized histograms of reduced energy (kT) over a robust range; samples
    outside it are counted on the figure."""
    import plotly.graph_objects as go

    lo, hi = robust_range(ensembles)
    edges = np.linspace(lo, hi, bins + 1)
    fig = go.Figure()
    for label, (u, w) in ensembles.items():
        fig.add_trace(go.Scatter(x=0.5 * (edges[1:] + edges[:-1]), y=_histogram(u, w, edges),
                                 mode="lines", line_shape="hvh", name=label,
                                 line=dict(color=color_of(label), width=2)))
    _note(fig, outside_note(ensembles, lo, hi, " kT"))
    fig.update_xaxes(range=[lo, hi])
    fig.update_layout(xaxis_title="reduced energy u = E/kT", yaxis_title="density",
                      height=400, margin=dict(l=50, r=20, t=50, b=40), legend=dict(y=0.98))
    return fig


def log_weight_figure(log_w: np.ndarray):
    """Left: log w relative to the largest, as counts of samples and as the share of the total
    weight per bin (where the weight mass is). Right: the cumulative weight of the top k samples,
    with the ESS marked."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    lw = np.asarray(log_w, np.float64)
    lw = lw[np.isfinite(lw)]
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("log w − max: samples and weight",
                                        "cumulative weight of the top-k samples"))
    if not len(lw):
        return fig
    shifted = lw - lw.max()
    lo = max(robust_range({"": (shifted, None)}, pad=0.0)[0], LOG_W_FLOOR)
    lo = min(lo, -1.0)
    edges = np.linspace(lo, 0.0, 61)
    w = np.exp(shifted)
    mids = 0.5 * (edges[1:] + edges[:-1])
    counts, _ = np.histogram(shifted, edges)
    mass, _ = np.histogram(shifted, edges, weights=w / w.sum())
    fig.add_trace(go.Bar(x=mids, y=counts, name="samples", marker_color="#BBBBBB"), row=1, col=1)
    fig.add_trace(go.Scatter(x=mids, y=mass, name="share of the weight", mode="lines",
                             line_shape="hvh", line=dict(color=COLORS["reweighted"], width=2)),
                  row=1, col=1, secondary_y=True)
    n_below = int(np.sum(shifted < lo))
    x_title = "log w − max (0 = the heaviest sample)"
    if n_below:  # said under the axis, where it cannot overlap the panel titles
        x_title += (f"<br>not shown: {n_below:,} samples below {lo:.3g} "
                    f"(together {w[shifted < lo].sum() / w.sum():.1e} of the weight)")
    cum = np.cumsum(np.sort(w)[::-1]) / w.sum()
    k = np.arange(1, len(w) + 1)
    fig.add_trace(go.Scatter(x=k, y=cum, mode="lines", name="top-k",
                             line=dict(color=COLORS["reweighted"])), row=1, col=2)
    ess = w.sum() ** 2 / np.sum(w ** 2)
    fig.add_vline(x=ess, line_dash="dot", row=1, col=2, annotation_text=f"ESS {ess:.3g}")
    fig.update_xaxes(range=[lo, 0], title_text=x_title, row=1, col=1)
    fig.update_yaxes(title_text="samples", row=1, col=1)
    fig.update_yaxes(title_text="share of the weight", row=1, col=1, secondary_y=True,
                     rangemode="tozero", tickformat=".0%")
    fig.update_xaxes(type="log", title_text="k (heaviest first)", row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=400, showlegend=False, bargap=0.05, margin=dict(l=50, r=20, t=60, b=70))
    return fig


# ------------------------------------------------------------------------------------- PNGs


def save_png_ramachandran(path, ensembles: dict, residue_labels: list[str], bins: int = 60):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = ramachandran_maps(ensembles, bins)
    labels = list(maps)
    n_res = len(residue_labels)
    fig, axes = plt.subplots(n_res, len(labels), figsize=(3.4 * len(labels) + 1.2, 3.3 * n_res),
                             squeeze=False, layout="constrained")
    for c, lab in enumerate(labels):
        edges = np.degrees(maps[lab]["edges"])
        for r in range(n_res):
            ax = axes[r, c]
            f = np.ma.masked_invalid(_capped(maps[lab]["free_energy"][r]).T)
            im = ax.pcolormesh(edges, edges, f, vmin=0, vmax=FE_MAX_KT, cmap="viridis")
            ax.set_title(f"{lab}\n{residue_labels[r]}", fontsize=9)
            ax.set_xticks(ANGLE_TICKS)
            ax.set_yticks(ANGLE_TICKS)
            ax.set_aspect("equal")
            ax.set_xlabel("φ (°)")
            ax.set_ylabel("ψ (°)")
    fig.colorbar(im, ax=axes, label="F / kT", shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_png_energy(path, ensembles: dict, bins: int = 80):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    lo, hi = robust_range(ensembles)
    edges = np.linspace(lo, hi, bins + 1)
    for label, (u, w) in ensembles.items():
        ax.stairs(_histogram(u, w, edges), edges, label=label, color=color_of(label), linewidth=1.5)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("reduced energy u = E/kT")
    ax.set_ylabel("density")
    note = outside_note(ensembles, lo, hi, " kT")
    if note:
        ax.set_title(note, fontsize=7, loc="left", wrap=True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
