"""Refinement objectives on a toy with a known density (issue #19): which one moves q to p.

The toy: two atoms with a harmonic bond (r0, stiffness k) and a harmonic restraint of their
centroid c (stiffness kc), so p(x) = exp(-u(x)) / Z on R^6 is normalizable and log Z is known:
the map (x1, x2) -> (c, r = x2 - x1) has Jacobian 1, so
    Z = (2 pi / kc)^{3/2} * 4 pi int_0^inf s^2 exp(-k (s - r0)^2 / 2) ds,
and KL(q || p) = E_q[log q + u] + log Z is estimated exactly from samples of q.

Two starting points, as a refinement meets them: an untrained `tiny` model (broad) and one
fitted by maximum likelihood to exact samples of a perturbed target (longer, softer bond, wider
centroid: an imperfect "MD-trained" model). Each objective runs the same steps from the same
state with the same seeds.

    python -m arbg_core.bench.refine_toy --steps 150 --out results
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..files import write_json
from ..model import ArBG, ModelConfig, train_loss, conditioning
from ..peptide import ATOM_NAMES, ELEMENTS, RESIDUE_TYPES, AtomFeatures
from ..refine import OBJECTIVES, RefineConfig, Target, refine
from ..sampling import sample
from ..tokenizer import Tokenizer, TokenizerConfig


@dataclass(frozen=True)
class Dimer:
    """Two atoms: bond length r0 (nm) with stiffness k (kT/nm^2), centroid restraint kc."""
    r0: float = 0.15
    k: float = 1 / 0.02 ** 2
    kc: float = 1 / 0.03 ** 2

    def energy(self, xyz: np.ndarray) -> np.ndarray:
        """(B, 2, 3) nm -> (B,) kT."""
        x = np.asarray(xyz, np.float64)
        r = np.linalg.norm(x[:, 1] - x[:, 0], axis=-1)
        c = x.mean(axis=1)
        return 0.5 * self.k * (r - self.r0) ** 2 + 0.5 * self.kc * (c ** 2).sum(-1)

    def _radial(self):
        s = np.linspace(0.0, self.r0 + 12 / math.sqrt(self.k), 200_001)
        return s, s ** 2 * np.exp(-0.5 * self.k * (s - self.r0) ** 2)

    def log_z(self) -> float:
        s, dens = self._radial()
        radial = float(np.sum(dens) * (s[1] - s[0]))
        return 1.5 * math.log(2 * math.pi / self.kc) + math.log(4 * math.pi * radial)

    def mean_bond(self) -> float:
        s, dens = self._radial()
        return float((s * dens).sum() / dens.sum())

    def samples(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n exact samples (n, 2, 3) float64 nm."""
        s, dens = self._radial()
        cdf = np.cumsum(dens) / dens.sum()
        r = np.interp(rng.random(n), cdf, s)
        d = rng.normal(size=(n, 3))
        d *= (r / np.linalg.norm(d, axis=1))[:, None]
        c = rng.normal(scale=1 / math.sqrt(self.kc), size=(n, 3))
        return np.stack([c - d / 2, c + d / 2], axis=1)


def dimer_features() -> AtomFeatures:
    """CA and C of one alanine, residue 0."""
    ids = lambda vocab, names: np.array([vocab.index(n) for n in names])  # noqa: E731
    return AtomFeatures(ids(ELEMENTS, "CC"), ids(ATOM_NAMES, ("CA", "C")),
                        ids(RESIDUE_TYPES, ("ALA", "ALA")), np.zeros(2, np.int64))


def dimer_target(dimer: Dimer = Dimer()) -> Target:
    return Target(dimer_features(), dimer.energy)


def toy_model(seed: int = 0, n_bins: int = 128, std: float = 0.1) -> tuple[ArBG, Tokenizer]:
    """An untrained `tiny` model in the centered frame, box +-0.3 nm, eval mode."""
    torch.manual_seed(seed)
    model = ArBG(ModelConfig.preset("tiny", n_bins=n_bins)).eval()
    return model.requires_grad_(False), Tokenizer(TokenizerConfig(n_bins=n_bins, a=3.0, std=std))


def pretrain(model: ArBG, tok: Tokenizer, dimer: Dimer, steps: int = 200, lr: float = 3e-3,
             batch: int = 256, seed: int = 0) -> ArBG:
    """Maximum likelihood on exact samples of `dimer` (as drawn: not centered), in place."""
    rng = np.random.default_rng(seed)
    cond = conditioning(dimer_features())
    model.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        bins, _ = tok.encode(dimer.samples(batch, rng), center=False)
        loss = train_loss(model, bins, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


def reverse_kl(model: ArBG, tok: Tokenizer, dimer: Dimer, n: int = 4000, seed: int = 0,
               tau: float = 1.0) -> float:
    """KL(q_tau || p) in nats from n samples of q_tau."""
    xyz, log_q = sample(model, tok, dimer_features(), n, tau=tau, seed=seed, device="cpu")
    return float(np.mean(log_q + dimer.energy(xyz)) + dimer.log_z())


def compare(steps: int = 100, seeds=(0, 1), objectives=OBJECTIVES, lr: float = 3e-3,
            on_row=None) -> dict:
    """Every objective from both starting points: KL and ESS before/after, wall time."""
    dimer = Dimer()
    starts = {"untrained": toy_model(0),
              "pretrained_on_perturbed": (pretrain(toy_model(0)[0], toy_model(0)[1],
                                                   Dimer(r0=0.165, k=Dimer.k / 2,
                                                         kc=Dimer.kc / 2)), toy_model(0)[1])}
    rows = []
    for start, (model, tok) in starts.items():
        kl0 = reverse_kl(model, tok, dimer, seed=99)
        for objective in objectives:
            for seed in seeds:
                cfg = RefineConfig(objective=objective, steps=steps, lr=lr, tau=1.0,
                                   eval_every=25, eval_n=1024, final_n=4000, seed=seed)
                t0 = time.perf_counter()
                res = refine(model, tok, dimer_target(dimer), cfg)
                rows.append({"start": start, "objective": objective, "seed": seed,
                             "kl_before": kl0, "kl_after": reverse_kl(res.model, tok, dimer,
                                                                      seed=99),
                             "ess_before": res.before["ess_fraction"],
                             "ess_after": res.after["ess_fraction"],
                             "rollbacks": res.rollbacks, "wall_s": time.perf_counter() - t0})
                if on_row is not None:
                    on_row(rows[-1])
    return {"toy": "two-atom harmonic bond + centroid restraint, tiny model, 128 bins",
            "steps": steps, "batch_size": RefineConfig.batch_size, "lr": lr,
            "mean": mean_by_objective(rows), "rows": rows}


def mean_by_objective(rows: list[dict]) -> dict:
    """{start: {objective: mean kl_after, ess_after over seeds}}."""
    out = {}
    for r in rows:
        out.setdefault(r["start"], {}).setdefault(r["objective"], []).append(r)
    return {start: {obj: {k: float(np.mean([r[k] for r in rs])) for k in ("kl_after", "ess_after")}
                    for obj, rs in by.items()} for start, by in out.items()}


def run(out_dir="results", steps: int = 100, on_row=None) -> dict:
    out = compare(steps=steps, on_row=on_row)
    write_json(f"{out_dir}/refine_toy.json", out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)

    def show(r):
        print(f"{r['start']:24s} {r['objective']:4s} seed {r['seed']}: KL {r['kl_before']:.3f} -> "
              f"{r['kl_after']:.3f}  ESS {r['ess_before']:.3f} -> {r['ess_after']:.3f}  "
              f"rollbacks {r['rollbacks']}  {r['wall_s']:.0f} s", flush=True)

    run(args.out, args.steps, on_row=show)


if __name__ == "__main__":
    main()
