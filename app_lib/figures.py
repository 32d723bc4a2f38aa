"""App-only plotly figures, mostly for the How it works page; arbg_core.plots has the shared ones.

Angles in degrees on axes, energies in kT; weights are normalized or None (uniform).
"""

from __future__ import annotations

import numpy as np

from arbg_core.plots import color_of, outside_note, robust_range


def angle_overlay(ensembles: dict, title: str = "φ of the first residue", bins: int = 72):
    """Overlaid densities of one angle: label -> (angles (n,) radians, weights or None)."""
    import plotly.graph_objects as go

    edges = np.linspace(-180, 180, bins + 1)
    fig = go.Figure()
    for label, (a, w) in ensembles.items():
        a = np.degrees(np.asarray(a, np.float64))
        h, _ = np.histogram(a, bins=edges, weights=w, density=True)
        fig.add_trace(go.Scatter(x=0.5 * (edges[1:] + edges[:-1]), y=h, mode="lines",
                                 line_shape="hvh", name=label,
                                 line=dict(color=color_of(label), width=2)))
    fig.update_layout(title=title, xaxis_title="angle (°)", yaxis_title="density", height=340,
                      margin=dict(l=40, r=20, t=40, b=40))
    fig.update_xaxes(range=[-180, 180])
    return fig


def weight_scatter(u: np.ndarray, log_q: np.ndarray, log_w: np.ndarray, max_points: int = 5000):
    """Each sample as a point: energy u against the model's log q, coloured by log w (shifted).
    Axes cover the bulk of the samples; those outside (clashes) are counted on the figure."""
    import plotly.graph_objects as go

    ok = np.isfinite(u) & np.isfinite(log_q) & np.isfinite(log_w)
    idx = np.flatnonzero(ok)[:max_points]
    lw = log_w[idx] - (log_w[idx].max() if len(idx) else 0.0)
    xr = robust_range({"samples": (u[idx], None)})
    yr = robust_range({"samples": (log_q[idx], None)})
    fig = go.Figure(go.Scattergl(
        x=u[idx], y=log_q[idx], mode="markers",
        marker=dict(color=np.maximum(lw, -20), colorscale="Viridis", size=5,
                    colorbar=dict(title="log w − max")),
        hovertemplate="u %{x:.1f} kT, log q %{y:.1f}<extra></extra>"))
    notes = [outside_note({"samples": (u[idx], None)}, *xr, " kT"),
             outside_note({"samples": (log_q[idx], None)}, *yr, " (log q)")]
    text = "; ".join(n.split("samples: ", 1)[1] for n in notes if n)
    if text:
        fig.add_annotation(text=f"Samples not shown (outside the axes): {text}", xref="paper", yref="paper", x=0, y=1.0,
                           xanchor="left", yanchor="bottom", showarrow=False,
                           font=dict(size=11, color="#555"))
    fig.update_xaxes(range=list(xr))
    fig.update_yaxes(range=list(yr))
    fig.update_layout(xaxis_title="energy u = E/kT (low = favoured by physics)",
                      yaxis_title="log q (high = favoured by the model)", height=400,
                      margin=dict(l=40, r=20, t=40, b=40))
    return fig


def top_weights(weights: np.ndarray, k: int = 40):
    """Bar chart of the k largest normalized weights, next to the uniform weight 1/n."""
    import plotly.graph_objects as go

    w = np.sort(np.asarray(weights, np.float64))[::-1][:k]
    fig = go.Figure(go.Bar(x=np.arange(1, len(w) + 1), y=w, name="weight",
                           marker_color=color_of("reweighted")))
    fig.add_hline(y=1.0 / max(len(weights), 1), line_dash="dot",
                  annotation_text="if every sample counted equally (1/n)")
    fig.update_layout(xaxis_title="rank", yaxis_title="normalized weight", height=320,
                      margin=dict(l=40, r=20, t=20, b=40), yaxis_type="log")
    return fig


def tau_demo(tau: float, n_bins: int = 40):
    """What tau does to one of the model's per-coordinate choices: P ∝ exp(logits / tau)."""
    import plotly.graph_objects as go

    x = np.linspace(-1, 1, n_bins)
    # a major and a minor basin, as the model might see one coordinate
    logits = np.log(0.7 * np.exp(-((x - 0.35) ** 2) / 0.02) + 0.3 * np.exp(-((x + 0.45) ** 2) / 0.01) + 1e-3)
    fig = go.Figure()
    for t, dash in ((1.0, "dot"), (float(tau), "solid")):
        p = np.exp((logits - logits.max()) / t)
        fig.add_trace(go.Scatter(x=x, y=p / p.sum(), mode="lines", line_shape="hvh",
                                 line=dict(dash=dash), name=f"tau = {t:g}"))
    fig.update_layout(xaxis_title="coordinate (one bin per step)", yaxis_title="probability",
                      height=320, margin=dict(l=40, r=20, t=20, b=40))
    return fig


def metrics_table(metrics: dict):
    """`evaluate_ensemble` metrics -> DataFrame: rows E-W2 / T-W2 / TICA-W2, columns proposal,
    reweighted and the MD-vs-MD noise floor."""
    import pandas as pd

    names = {"e_w2": "E-W2 (kT)", "t_w2": "T-W2 (rad)", "tica_w2": "TICA-W2"}
    return pd.DataFrame({"proposal": metrics["proposal"], "reweighted": metrics["reweighted"],
                         "noise floor (MD vs MD)": metrics["noise_floor"]}).loc[list(names)].rename(index=names)
