"""Reference MD with OpenMM: chunked, resumable, no frame lost or duplicated.

Protocol (DESIGN §4): LangevinMiddleIntegrator, 1 fs, friction 1/ps, no constraints, the preset's
temperature (or an override); minimize, warm up, then one frame every `save_ps`.

Layout of an output folder:
    topology.pdb         the system, minimized
    chunk_00000.dcd ...  consecutive frames (Å inside DCD, nm through mdtraj)
    checkpoint_K.chk     OpenMM checkpoint after K chunks (RNG state included)
    state.json           the commit point: {"chunks_done": K, "checkpoint": ..., ...}
    md.json              protocol, seed, versions
A chunk file becomes part of the run only when state.json says so; anything newer is removed
on resume, so a kill at any moment loses at most the chunk in flight.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .energy import DEFAULT_PRESET, create_system, get_preset


@dataclass(frozen=True)
class MDConfig:
    ns: float = 1.0
    preset: str = DEFAULT_PRESET
    temperature_k: float | None = None  # None: the preset's temperature
    dt_fs: float = 1.0
    friction_per_ps: float = 1.0
    save_ps: float = 1.0
    warmup_ps: float = 100.0
    chunk_frames: int = 1000
    seed: int = 0
    platform: str = "auto"

    @property
    def n_frames(self) -> int:
        return int(round(self.ns * 1000.0 / self.save_ps))

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.save_ps * 1000.0 / self.dt_fs))


def _atomic_write(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_state(out: Path) -> dict | None:
    p = out / "state.json"
    return json.loads(p.read_text()) if p.exists() else None


def _write_chunk(path: Path, xyz_nm: np.ndarray, topology):
    import mdtraj as md

    tmp = path.with_name(path.name + ".tmp.dcd")
    md.Trajectory(xyz_nm.astype(np.float32), topology).save_dcd(str(tmp))
    os.replace(tmp, path)


def run_md(topology, xyz: np.ndarray, out_dir: str | os.PathLike, config: MDConfig,
           progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) MD; `progress(frames_done, n_frames, ns_per_day)` after each chunk."""
    import mdtraj as md
    import openmm
    import openmm.unit as unit

    from .energy import fastest_platform

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset(config.preset)
    temperature = config.temperature_k or preset.temperature_k
    mdtop = topology if hasattr(topology, "to_openmm") else md.Topology.from_openmm(topology)
    system = create_system(mdtop, preset)
    state = _read_state(out)
    if state is not None and state["config"] != asdict(config):
        changed = {k for k, v in asdict(config).items() if state["config"].get(k) != v}
        raise ValueError(f"{out} holds a run with different settings ({', '.join(sorted(changed))}); "
                         "use another --out or the same settings to resume")
    platform_name = (state or {}).get("platform") or (
        fastest_platform(system, np.asarray(xyz, float)) if config.platform == "auto" else config.platform)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin,
                                                 config.friction_per_ps / unit.picosecond,
                                                 config.dt_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed + 1)  # 0 would mean "pick one at random"
    platform = openmm.Platform.getPlatformByName(platform_name)
    props = {"Threads": "1"} if platform_name == "CPU" else {}
    ctx = openmm.Context(system, integrator, platform, props)
    chunk_size = config.chunk_frames
    n_chunks = -(-config.n_frames // chunk_size)

    if state is None:
        md.Trajectory(np.asarray(xyz, np.float32)[None], mdtop).save_pdb(str(out / "topology.pdb"))
        meta = {"config": asdict(config), "temperature_k": temperature, "platform": platform_name,
                "n_atoms": mdtop.n_atoms, "openmm": openmm.__version__,
                "integrator": "LangevinMiddleIntegrator", "constraints": None}
        (out / "md.json").write_text(json.dumps(meta, indent=2))
        ctx.setPositions(np.asarray(xyz, dtype=np.float64))
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 1000)
        ctx.setVelocitiesToTemperature(temperature * unit.kelvin, config.seed + 1)
        integrator.step(int(round(config.warmup_ps * 1000.0 / config.dt_fs)))
        state = {"config": asdict(config), "platform": platform_name, "chunks_done": 0,
                 "frames_done": 0, "checkpoint": "checkpoint_0.chk"}
        _atomic_write(out / state["checkpoint"], ctx.createCheckpoint())
        _atomic_write(out / "state.json", json.dumps(state, indent=2).encode())
    else:
        ctx.loadCheckpoint((out / state["checkpoint"]).read_bytes())
    # Anything beyond the commit point is a leftover of a killed run.
    for p in out.glob("chunk_*.dcd*"):
        if p.suffix != ".dcd" or int(p.stem.split("_")[1].split(".")[0]) >= state["chunks_done"]:
            p.unlink()
    for p in out.glob("checkpoint_*"):
        if p.name != state["checkpoint"]:
            p.unlink()

    frames_done = state["frames_done"]
    if progress:
        progress(frames_done, config.n_frames, 0.0)
    for k in range(state["chunks_done"], n_chunks):
        n = min(chunk_size, config.n_frames - k * chunk_size)
        frames = np.empty((n, mdtop.n_atoms, 3), np.float32)
        t0 = time.perf_counter()
        for i in range(n):
            integrator.step(config.steps_per_frame)
            pos = ctx.getState(getPositions=True).getPositions(asNumpy=True)
            frames[i] = pos.value_in_unit(unit.nanometer)
        seconds = time.perf_counter() - t0
        if not np.isfinite(frames).all():  # blew up: keep the last good checkpoint, write nothing
            raise RuntimeError(f"{out}: non-finite coordinates in chunk {k} (frames "
                               f"{k * chunk_size}..{k * chunk_size + n - 1}); the run stays at "
                               f"{frames_done} frames")
        _write_chunk(out / f"chunk_{k:05d}.dcd", frames, mdtop)
        ckpt = f"checkpoint_{k + 1}.chk"
        _atomic_write(out / ckpt, ctx.createCheckpoint())
        frames_done += n
        new_state = dict(state, chunks_done=k + 1, frames_done=frames_done, checkpoint=ckpt)
        _atomic_write(out / "state.json", json.dumps(new_state, indent=2).encode())
        (out / state["checkpoint"]).unlink(missing_ok=True)
        state = new_state
        if progress:
            ns_per_day = n * config.save_ps * 1e-3 / seconds * 86400.0
            progress(frames_done, config.n_frames, ns_per_day)
    return out


class quiet_stdout:
    """Silence C-level stdout (mdtraj's DCD plugin prints a banner on every file it opens)."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 1)
        os.close(self._saved)


def run_meta(out_dir: str | os.PathLike) -> dict:
    """md.json (settings, temperature, platform) of an `arbg md` folder or of its first replica."""
    out = Path(out_dir)
    for folder in (out, *sorted(p for p in out.glob("replica_*") if p.is_dir())):
        if (folder / "md.json").is_file():
            return json.loads((folder / "md.json").read_text())
    raise FileNotFoundError(f"no md.json under {out}: not an `arbg md` folder")


def load_run(out_dir: str | os.PathLike, stride: int = 1):
    """Load an `arbg md` folder (or a folder of replica_* folders) as one mdtraj Trajectory."""
    import mdtraj as md

    out = Path(out_dir)
    runs = sorted(p for p in out.glob("replica_*") if p.is_dir()) or [out]
    trajs = []
    for run in runs:
        state = _read_state(run)
        if state is None:
            raise FileNotFoundError(f"{run} is not an arbg md folder (no state.json)")
        chunks = [run / f"chunk_{k:05d}.dcd" for k in range(state["chunks_done"])]
        if chunks:
            with quiet_stdout():
                trajs.append(md.load(chunks, top=str(run / "topology.pdb"), stride=stride))
    if not trajs:
        raise ValueError(f"{out} has no finished frames yet")
    return md.join(trajs, check_topology=True, discard_overlapping_frames=False)
