"""Ensemble metrics (DESIGN section 10): E-W2, T-W2, TICA-W2, Ramachandran free energies.

All functions take arrays (and mdtraj trajectories for the feature helpers), never the model or
OpenMM. Units: energies in kT, angles in radians, distances in nm. Every W2 returned here is the
distance itself, sqrt(W2^2), computed exactly (1D quantile functions or POT's network simplex).
Weights are optional everywhere and are normalized internally; samples with zero weight or a
non-finite value are left out.

Memory of the exact solver: the float64 cost matrix of n x m points is 8 n m bytes and POT's
network simplex keeps several more arrays of that size: about 40 bytes per entry in all
(measured), so 10,000 x 10,000 points need about 4 GB (the matrix itself 0.8 GB). Larger sets
are subsampled with a seed to `max_points` per side (default 10,000, the paper's protocol).
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 10_000  # per side, as in the paper: 10,000 samples vs 10,000 reference frames
TWO_PI = 2.0 * np.pi


# ------------------------------------------------------------------------------ torsions


def backbone_torsions(traj) -> tuple[np.ndarray, np.ndarray]:
    """mdtraj Trajectory -> (phi (n, R_phi), psi (n, R_psi)) radians, mdtraj's own definitions."""
    import mdtraj as md

    return md.compute_phi(traj)[1], md.compute_psi(traj)[1]


def ramachandran_angles(traj) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(phi (n, R), psi (n, R), pairs): one (phi, psi) map per residue that has both angles,
    pairs[k] = (residue of phi, residue of psi). A peptide where no residue has both (a
    zwitterionic dipeptide) gets the two torsions around each peptide bond instead:
    phi of residue r+1 with psi of residue r, as is usual for dipeptides."""
    import mdtraj as md

    top = traj.topology
    phi_idx, phi = md.compute_phi(traj)
    psi_idx, psi = md.compute_psi(traj)
    phi_res = [top.atom(int(q[1])).residue.index for q in phi_idx]  # N of the residue
    psi_res = [top.atom(int(q[0])).residue.index for q in psi_idx]
    pairs = [(r, r) for r in phi_res if r in psi_res] or [
        (r, r - 1) for r in phi_res if r - 1 in psi_res]
    return (phi[:, [phi_res.index(a) for a, _ in pairs]].reshape(len(phi), len(pairs)),
            psi[:, [psi_res.index(b) for _, b in pairs]].reshape(len(psi), len(pairs)), pairs)


def ramachandran_labels(topology, pairs: list[tuple[int, int]]) -> list[str]:
    """Panel titles for `ramachandran_angles` pairs: 'ALA2', or 'φ SER2 / ψ GLY1'."""
    res = list(topology.residues)
    return [str(res[a]) if a == b else f"φ {res[a]} / ψ {res[b]}" for a, b in pairs]


def integrated_autocorrelation_time(x: np.ndarray, c: float = 5.0) -> float:
    """tau_int = 1/2 + sum_t rho(t) in frames, summed up to Sokal's window M >= c tau_int(M)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    n = len(x)
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    if acf[0] <= 0:
        return 0.5
    rho = acf / acf[0]
    tau = 0.5
    for m in range(1, n):
        tau += rho[m]
        if m >= c * tau:
            break
    return float(max(tau, 0.5))


# -------------------------------------------------------------------------------- helpers


def _clean(x: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows with non-finite values or zero weight; -> (x (k, ...), w (k,) summing to 1)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    if len(w) != len(x):
        raise ValueError(f"{len(w)} weights for {len(x)} points")
    ok = np.all(np.isfinite(x.reshape(len(x), -1)), axis=1) & np.isfinite(w) & (w > 0)
    if not ok.any():
        raise ValueError("no point with a finite value and a positive weight")
    return x[ok], w[ok] / w[ok].sum()


def subsample(x: np.ndarray, w: np.ndarray, max_points: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points: uniform weights -> a random subset without replacement;
    non-uniform -> systematic resampling to uniform weights (the paper's 'after resampling')."""
    if len(x) <= max_points:
        return x, w
    if np.allclose(w, w[0]):
        idx = np.sort(rng.choice(len(x), max_points, replace=False))
    else:
        from .reweight import systematic

        idx = systematic(w, max_points, rng)
    return x[idx], np.full(max_points, 1.0 / max_points)


def _emd_w2(a: np.ndarray, b: np.ndarray, cost: np.ndarray, n_threads: int = 1) -> float:
    """sqrt of the exact optimal transport cost; raises if the solver did not converge."""
    import ot

    n_iter = max(1_000_000, 50 * cost.size)
    value, log = ot.emd2(a, b, cost, numItermax=n_iter, log=True, numThreads=n_threads)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return float(np.sqrt(max(float(value), 0.0)))


def _torus_cost(x: np.ndarray, y: np.ndarray, block_elems: int = 20_000_000) -> np.ndarray:
    """(n, d), (m, d) radians -> (n, m) float64 sum over angles of min(|d|, 2pi - |d|)^2."""
    cost = np.empty((len(x), len(y)))
    rows = max(1, block_elems // max(1, len(y) * x.shape[1]))
    for s in range(0, len(x), rows):
        d = np.abs(x[s:s + rows, None, :] - y[None, :, :]) % TWO_PI  # (rows, m, d)
        cost[s:s + rows] = np.sum(np.minimum(d, TWO_PI - d) ** 2, axis=-1)
    return cost


# -------------------------------------------------------------------------------- metrics


def e_w2(u_ref: np.ndarray, u_model: np.ndarray, w_model: np.ndarray | None = None,
         w_ref: np.ndarray | None = None) -> float:
    """Exact 1D W2 (kT) between reduced-energy distributions; non-finite energies excluded.

    Integrates |F_ref^-1(t) - F_model^-1(t)|^2 over t in [0, 1] (POT's quantile-function
    `wasserstein_1d`, exact for weighted empirical measures), then takes the square root.
    """
    import ot

    x, wx = _clean(np.asarray(u_ref).reshape(-1), w_ref)
    y, wy = _clean(np.asarray(u_model).reshape(-1), w_model)
    return float(np.sqrt(max(float(ot.wasserstein_1d(x, y, wx, wy, p=2)), 0.0)))


def t_w2(angles_ref: np.ndarray, angles_model: np.ndarray, w_ref: np.ndarray | None = None,
         w_model: np.ndarray | None = None, max_points: int = MAX_POINTS, seed: int = 0,
         n_threads: int = 1) -> float:
    """Exact W2 (radians) on the torus between (n, d) and (m, d) angle sets.

    Cost between two points: sum over the d angles of min(|a - b|, 2pi - |a - b|)^2, so -179 deg
    and 179 deg are 2 deg apart. Sides larger than `max_points` are subsampled with `seed`
    (see `subsample`); memory is about 40 bytes per cost entry (module docstring).
    """
    rng = np.random.default_rng(seed)
    x, wx = subsample(*_clean(np.asarray(angles_ref).reshape(len(angles_ref), -1), w_ref),
                      max_points, rng)
    y, wy = subsample(*_clean(np.asarray(angles_model).reshape(len(angles_model), -1), w_model),
                      max_points, rng)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference has {x.shape[1]} angles, model {y.shape[1]}")
    return _emd_w2(wx, wy, _torus_cost(x, y), n_threads)


def tica_features(traj) -> np.ndarray:
    """(n, F) float64: pairwise distances (nm) of backbone heavy atoms (N, CA, C, O and the cap
    atoms mdtraj calls backbone) + sin and cos of every phi, psi, omega."""
    import mdtraj as md

    bb = traj.topology.select("backbone")
    pairs = np.array([(i, j) for k, i in enumerate(bb) for j in bb[k + 1:]], dtype=np.int64)
    parts = [md.compute_distances(traj, pairs.reshape(-1, 2))]
    for compute in (md.compute_phi, md.compute_psi, md.compute_omega):
        angles = compute(traj)[1]
        parts += [np.sin(angles), np.cos(angles)]
    return np.concatenate(parts, axis=1).astype(np.float64)


def fit_tica(ref_features, lag: int, dim: int = 2):
    """deeptime TICA (kinetic-map scaling, deeptime's default) fitted on the reference.

    `ref_features`: (n, F) array or a list of them (independent replicas, each in time order);
    `lag` in frames. Returns the fitted deeptime model (`.transform(x) -> (n, dim)`).
    """
    from deeptime.decomposition import TICA

    data = ref_features if isinstance(ref_features, (list, tuple)) else [ref_features]
    data = [np.asarray(d, dtype=np.float64) for d in data]
    if max(len(d) for d in data) <= lag:
        raise ValueError(f"lag {lag} frames is not shorter than the reference trajectory")
    return TICA(lagtime=int(lag), dim=dim).fit(data).fetch_model()


def tica_w2(ref_features, model_features: np.ndarray, lag: int,
            w_model: np.ndarray | None = None, *, tica=None, w_ref: np.ndarray | None = None,
            max_points: int = MAX_POINTS, seed: int = 0, n_threads: int = 1) -> float:
    """Exact Euclidean W2 on the first 2 TICA components, TICA fitted on the reference.

    `ref_features` (n, F) or a list of replicas, `model_features` (m, F) from `tica_features`;
    `lag` in frames (ignored when a fitted `tica` model is passed in).
    """
    import ot

    tica = fit_tica(ref_features, lag) if tica is None else tica
    ref = np.concatenate(ref_features) if isinstance(ref_features, (list, tuple)) else ref_features
    rng = np.random.default_rng(seed)
    x, wx = subsample(*_clean(tica.transform(np.asarray(ref, np.float64)), w_ref), max_points, rng)
    y, wy = subsample(*_clean(tica.transform(np.asarray(model_features, np.float64)), w_model),
                      max_points, rng)
    return _emd_w2(wx, wy, ot.dist(x, y, metric="sqeuclidean"), n_threads)


# ------------------------------------------------------------------------------ Ramachandran


def ramachandran(phi: np.ndarray, psi: np.ndarray, weights: np.ndarray | None = None,
                 bins: int = 60) -> dict:
    """Per-residue (phi, psi) histograms on [-pi, pi]^2 and free energies -log p (kT).

    phi, psi (n, R) radians, paired per residue (see `ramachandran_angles`). Returns
    {"edges": (bins + 1,) rad, "p": (R, bins, bins) probabilities per residue (sum 1, axis 1 is
    phi), "free_energy": (R, bins, bins) -log p shifted to min 0, +inf where empty}.
    """
    phi, psi = np.atleast_2d(phi), np.atleast_2d(psi)
    if phi.shape != psi.shape:
        raise ValueError(f"phi {phi.shape} and psi {psi.shape} must be paired per residue")
    w = np.ones(len(phi)) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    p = np.stack([np.histogram2d(phi[:, r], psi[:, r], bins=[edges, edges], weights=w)[0]
                  for r in range(phi.shape[1])]).reshape(-1, bins, bins)
    p /= np.maximum(p.sum(axis=(1, 2), keepdims=True), np.finfo(float).tiny)
    with np.errstate(divide="ignore"):
        f = -np.log(p)
    f -= np.min(f, axis=(1, 2), keepdims=True, initial=np.inf, where=np.isfinite(f))
    return {"edges": edges, "p": p, "free_energy": f}


# -------------------------------------------------------------------------- noise floor, report


def noise_floor(metric_fn, ref, **kwargs) -> float:
    """The same metric between the first and second time halves of the reference (n along axis 0).

    E.g. `noise_floor(e_w2, u_ref)`, `noise_floor(t_w2, angles_ref, seed=0)`. Each half has n/2
    points, so the floor is a little higher than an MD-vs-MD comparison at n points.
    """
    half = len(ref) // 2
    return metric_fn(ref[:half], ref[half:2 * half], **kwargs)


def evaluate_ensemble(ref_traj, ens_xyz: np.ndarray, topology, u_ref: np.ndarray,
                      u_model: np.ndarray, w_model: np.ndarray, lag: int,
                      n_points: int = MAX_POINTS, seed: int = 0, n_threads: int = 1) -> dict:
    """E-W2, T-W2 and TICA-W2 of the proposal (unweighted) and the reweighted ensemble, plus the
    reference noise floors (first vs second half in time).

    ref_traj: mdtraj reference trajectory (time order), u_ref (n_ref,) kT of its frames;
    ens_xyz (n, A, 3) nm model samples with u_model (n,) kT and normalized weights w_model (n,).
    Protocol: at most `n_points` model samples (reweighted: systematic resampling by w_model;
    proposal: random subset) against `n_points` reference frames evenly strided in time (the
    halves are then time blocks). TICA (lag in frames) is fitted on the full reference.
    """
    import mdtraj as md

    from .data import evenly_spaced
    from .reweight import systematic

    rng = np.random.default_rng(seed)
    n_ref = ref_traj.n_frames
    ref_idx = evenly_spaced(n_ref, n_points)
    n = len(ens_xyz)
    model_sets = {
        "proposal": np.sort(rng.choice(n, min(n, n_points), replace=False)),
        "reweighted": systematic(np.asarray(w_model, np.float64) / np.sum(w_model),
                                 n_points, rng),
    }
    used = np.unique(np.concatenate(list(model_sets.values())))  # features of these only
    model_sets = {k: np.searchsorted(used, v) for k, v in model_sets.items()}
    model_traj = md.Trajectory(np.asarray(ens_xyz, np.float32)[used], topology)
    ref_angles = np.concatenate(backbone_torsions(ref_traj[ref_idx]), axis=1)
    model_angles = np.concatenate(backbone_torsions(model_traj), axis=1)
    ref_feats_all = tica_features(ref_traj)
    tica = fit_tica(ref_feats_all, lag)
    ref_feats = ref_feats_all[ref_idx]
    model_feats = tica_features(model_traj)
    u_ref_s = np.asarray(u_ref, np.float64)[ref_idx]
    u_model = np.asarray(u_model, np.float64)[used]
    opts = dict(max_points=n_points, seed=seed, n_threads=n_threads)

    out = {"n_reference_frames": int(len(ref_idx)), "n_model_samples": int(n),
           "n_points": int(n_points), "tica_lag_frames": int(lag), "seed": int(seed),
           "noise_floor": {
               "e_w2": noise_floor(e_w2, u_ref_s),
               "t_w2": noise_floor(t_w2, ref_angles, **opts),
               "tica_w2": noise_floor(tica_w2, ref_feats, lag=lag, tica=tica, **opts)}}
    for name, idx in model_sets.items():
        out[name] = {"e_w2": e_w2(u_ref_s, u_model[idx]),
                     "t_w2": t_w2(ref_angles, model_angles[idx], **opts),
                     "tica_w2": tica_w2(ref_feats, model_feats[idx], lag, tica=tica, **opts)}
    return out
