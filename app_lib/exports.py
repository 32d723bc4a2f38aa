"""Downloads as bytes (PDB, DCD + topology zip, CSV, JSON run record) and reading a record back.

The record holds every setting that determines the samples (system, model, n, tau, seed,
method and the full SampleConfig): loading it on the Home page and pressing Sample reproduces
the same samples on the same device.
"""

from __future__ import annotations

import io
import json
import shlex
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from arbg_core import __version__
from arbg_core.files import json_text, jsonable
from arbg_core.peptide import TERMINI, normalize_sequence

from .run import STATUS_NAMES, trajectory

RECORD_KIND = "arbg run record"
RECORD_VERSION = 1


def _saved(traj, name: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="arbg-export-") as d:
        path = Path(d) / name
        traj.save(str(path))
        return path.read_bytes()


def pdb_bytes(topology, xyz: np.ndarray) -> bytes:
    """Multi-model PDB (one MODEL per frame) of (n, A, 3) nm frames, as mdtraj writes it (the
    viewer's PDB text, viewer.pdb_text, is a different, filtered one: see there)."""
    return _saved(trajectory(topology, xyz), "samples.pdb")


def samples_table(run) -> "pd.DataFrame":  # noqa: F821
    """One row per sample: weight, log w, log q, u (kT), status, phi/psi (degrees) per residue."""
    import pandas as pd

    ens = run.ensemble
    phi, psi, pairs = run.angles()
    residues = [str(r) for r in run.topology.residues]
    table = {"sample": np.arange(ens.n), "weight": ens.weights, "log_w": ens.log_w,
             "log_q": ens.log_q, "u_kT": ens.u,
             "status": [STATUS_NAMES[int(s)] for s in ens.status]}
    for j, (a, b) in enumerate(pairs):
        table[f"phi_{residues[a]}_deg"] = np.degrees(phi[:, j])
        table[f"psi_{residues[b]}_deg"] = np.degrees(psi[:, j])
    return pd.DataFrame(table)


COLUMN_HELP = {
    "sample": "index of the sample (its frame in the DCD)",
    "weight": "normalized Boltzmann weight: weighted averages are sum(weight x value); sums to 1",
    "log_w": "log importance weight = -u - log q (nats); -inf means weight 0",
    "log_q": "log density the model gave the sample (nats, nm coordinates; both mirror images)",
    "u_kT": "reduced energy u = E/kT under the force field (kT = 0.6 kcal/mol at 300 K)",
    "status": "chirality check: kept as drawn, mirrored (all centers inverted), dropped (mixed)",
}


def column_help(columns) -> dict[str, str]:
    """What each samples-table column means (phi/psi columns included)."""
    out = {}
    for c in columns:
        if c in COLUMN_HELP:
            out[c] = COLUMN_HELP[c]
        elif c.startswith(("phi_", "psi_")) and c.endswith("_deg"):
            out[c] = f"backbone dihedral {c[:3]} of residue {c[4:-4]}, degrees"
    return out


def csv_bytes(run) -> bytes:
    return samples_table(run).to_csv(index=False).encode()


def run_record(run) -> dict:
    """JSON-serializable record: settings, versions, counts, ESS, timings, metrics if compared."""
    r = run.result
    summary = r.summary()
    record = {"kind": RECORD_KIND, "record_version": RECORD_VERSION, "app_version": __version__,
              "settings": {"sequence": r.peptide.sequence, "termini": r.peptide.termini,
                           "model": run.model_name, "preset": r.preset, "n": r.config.n,
                           "tau": r.tau, "seed": r.config.seed, "method": r.config.method},
              "sample_config": asdict(r.config), "device": r.device,
              "summary": summary, "prep_timings_s": run.prep_timings,
              "reproduce_cli": cli_command(run)}
    if run.comparison is not None:
        record["comparison"] = {"reference": run.comparison.source, "metrics": run.comparison.metrics,
                                "phi_positive_basin": run.comparison.evaluation.report["phi_positive_basin"]}
    return jsonable(record)


def record_bytes(run) -> bytes:
    return json_text(run_record(run)).encode()


def cli_command(run) -> str:
    r = run.result
    return "# --temperature is tau, the model's sampling temperature (not kelvin)\n" + " ".join(["arbg", "sample", "--model", shlex.quote(run.model_name), "--sequence",
                     shlex.quote(r.peptide.sequence), "--termini", r.peptide.termini,
                     "--n", str(r.config.n), "--batch-size", str(r.config.batch_size),
                     "--temperature", repr(float(r.tau)), "--method", r.config.method,
                     "--seed", str(r.config.seed), "--device", r.device.split(":")[0],
                     "--out", "samples_out"])


def settings_from_record(data: bytes) -> dict:
    """Validated settings of a run record (sequence, termini, model, n, tau, seed, method).
    Raises ValueError with a message for the user."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a JSON file ({e})") from None
    if not isinstance(record, dict) or record.get("kind") != RECORD_KIND:
        raise ValueError("not an arbg run record (download one from the Export page)")
    s = record.get("settings")
    if not isinstance(s, dict):
        raise ValueError("the record has no settings")
    try:
        termini = str(s["termini"])
        if termini not in TERMINI:
            raise ValueError(f"unknown termini {termini!r}")
        out = {"sequence": normalize_sequence(str(s["sequence"]), termini), "termini": termini,
               "model": str(s["model"]), "n": int(s["n"]), "tau": float(s["tau"]),
               "seed": int(s["seed"]), "method": str(s.get("method", "snis"))}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"invalid settings in the record: {e}") from None
    return out


def dcd_zip_bytes(run) -> bytes:
    """topology.pdb + samples.dcd (all samples, after the chirality fix, Å as DCD requires) +
    samples.csv (weights line up with the DCD frames) + record.json + README.txt."""
    traj = trajectory(run.topology, run.xyz)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("topology.pdb", _saved(traj[0], "topology.pdb"))
        z.writestr("samples.dcd", _saved(traj, "samples.dcd"))
        z.writestr("samples.csv", csv_bytes(run))
        z.writestr("record.json", record_bytes(run))
        z.writestr("README.txt", README)
    return buf.getvalue()


README = """arbg samples
topology.pdb  the sampled system (atom order of every frame)
samples.dcd   every sample after the chirality fix; load with mdtraj.load("samples.dcd", top="topology.pdb")
samples.csv   one row per DCD frame: weight (normalized Boltzmann weight), log_w (= -u_kT - log_q,
              nats), log_q (model log density, nats), u_kT (energy E/kT), status (kept / mirrored /
              dropped by the chirality check), phi_*/psi_* (backbone dihedrals, degrees)
record.json   settings, versions, counts and ESS of the run
Weighted averages: sum_i weight_i * f(frame_i). Dropped samples have weight 0.
"""

