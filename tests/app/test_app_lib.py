"""The app's plain-Python helpers: upload validation, the 3D view's HTML, text escaping, catalog."""

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from app_lib import catalog, upload, viewer
from app_lib.text import plain

PAYLOAD = "</script><script>alert(1)</script>"


def cut(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize("ext", ["dcd", "xtc", "trr", "pdb"])
def test_reads_every_format(files, ala2, ext):
    ref = upload.reference_from_upload([("top.pdb", files["top"]), (f"my.{ext.upper()}", files[ext])],
                                ala2.topology)
    assert ref.n_frames == 20 and ref.topology is ala2.topology  # our topology, their coordinates


def test_single_multimodel_pdb(files, ala2):
    assert upload.reference_from_upload([("md.pdb", files["pdb"])], ala2.topology).n_frames == 20


@pytest.mark.parametrize("ext", ["dcd", "xtc", "trr"])
def test_truncated_trajectory(files, ala2, ext):
    with pytest.raises(upload.UploadError, match="truncated"):
        upload.reference_from_upload([("top.pdb", files["top"]), (f"t.{ext}", cut(files[ext]))], ala2.topology)


def test_truncated_multimodel_pdb(files, ala2):
    with pytest.raises(upload.UploadError, match="truncated or inconsistent"):
        upload.reference_from_upload([("t.pdb", cut(files["pdb"]))], ala2.topology)


def test_unknown_format(files, ala2):
    with pytest.raises(upload.UploadError, match="unknown trajectory format .gro"):
        upload.reference_from_upload([("top.pdb", files["top"]), ("t.gro", b"x")], ala2.topology)
    with pytest.raises(upload.UploadError, match="unknown single-file format"):
        upload.reference_from_upload([("t.dcd", files["dcd"])], ala2.topology)
    with pytest.raises(upload.UploadError, match="not a DCD file"):
        upload.reference_from_upload([("top.pdb", files["top"]), ("t.dcd", b"hello world" * 10)], ala2.topology)


def test_over_the_size_limit(files, ala2):
    """Refused before anything is read, with a message that names the limit."""
    big = files["pdb"] + b" " * (upload.MAX_UPLOAD_MB * 2**20)  # just over the app's limit
    with pytest.raises(upload.UploadError, match=f"over the {upload.MAX_UPLOAD_MB} MB limit: thin"):
        upload.reference_from_upload([("md.pdb", big)], ala2.topology)
    with pytest.raises(upload.UploadError, match="the upload is 2 MB, over the 1 MB limit"):
        upload.reference_from_upload([("top.pdb", files["top"]), ("t.dcd", b" " * 2**21)],
                                     ala2.topology, max_mb=1)


def test_empty_file(ala2):
    with pytest.raises(upload.UploadError, match="empty"):
        upload.reference_from_upload([("md.pdb", b"")], ala2.topology)


def test_mismatch_messages(files, ala2):
    text = files["pdb"].decode()
    fewer = "\n".join(l for l in text.splitlines() if not (l.startswith("ATOM") and l[12:16].strip() == "H1"))
    with pytest.raises(upload.UploadError, match="atom count mismatch: md.pdb has 20 atoms"):
        upload.reference_from_upload([("md.pdb", fewer.encode())], ala2.topology)
    lines = text.splitlines()
    for i, l in enumerate(lines):  # swap atoms 1 and 2 of every model
        if l.startswith("MODEL"):
            lines[i + 1], lines[i + 2] = lines[i + 2], lines[i + 1]
    with pytest.raises(upload.UploadError, match="atom order mismatch at atom 1"):
        upload.reference_from_upload([("md.pdb", "\n".join(lines).encode())], ala2.topology)
    with pytest.raises(upload.UploadError, match="atom count mismatch"):  # topology vs trajectory
        upload.reference_from_upload([("top.pdb", fewer.split("ENDMDL")[0].encode()), ("t.dcd", files["dcd"])],
                              ala2.topology)


def test_private_temp_folder_is_removed(files, ala2, monkeypatch):
    made = []
    real = tempfile.mkdtemp

    def spy(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    upload.reference_from_upload([("top.pdb", files["top"]), ("../../evil name.xtc", files["xtc"])], ala2.topology)
    with pytest.raises(upload.UploadError):
        upload.reference_from_upload([("top.pdb", files["top"]), ("t.xtc", cut(files["xtc"]))], ala2.topology)
    uploads = [m for m in made if Path(m).name.startswith("arbg-upload-")]
    assert len(uploads) == 2 and not any(Path(m).exists() for m in made)


def test_script_in_remark_and_residue_name_is_inert(files, ala2):
    text = files["pdb"].decode()
    with_remark = f"REMARK   1 {PAYLOAD}\n" + text
    ref = upload.reference_from_upload([(f"{PAYLOAD}.pdb", with_remark.encode())], ala2.topology)
    page = viewer.viewer_html(ref.topology, ref.xyz[:5])
    assert "alert" not in page
    assert len(re.findall("<script", page)) == 3  # py3Dmol's, our player's and wheel guard, nothing else

    renamed = "\n".join(l[:17] + "</s" + l[20:] if l.startswith("ATOM") and l[17:20] == "ALA" else l
                        for l in with_remark.splitlines())
    with pytest.raises(upload.UploadError, match="atom order mismatch") as e:
        upload.reference_from_upload([("md.pdb", renamed.encode())], ala2.topology)
    assert "</s" not in plain(e.value)


def test_viewer_never_writes_unsafe_names(ala2):
    """Even a topology with hostile names (not one we build) cannot reach the page."""
    import mdtraj as md

    top = md.Topology()
    chain = top.add_chain()
    res = top.add_residue("</script>", chain)
    a = top.add_atom("<img", md.element.carbon, res)
    b = top.add_atom("C2", md.element.carbon, res)
    top.add_bond(a, b)
    text = viewer.pdb_text(top, np.zeros((1, 2, 3), np.float32))
    assert "<" not in text and " X   UNK A" in text and "CONECT    1    2" in text
    page = viewer.viewer_html(top, np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32))
    assert "</script>\"" not in page and "<img" not in page


def test_viewer_modes_and_player(ala2):
    xyz = np.repeat(ala2.xyz[None], 3, axis=0)
    for mode in ("animate", "overlay", "single"):
        page = viewer.viewer_html(ala2.topology, xyz, mode=mode, color="element")
        assert "/app/static/3Dmol-min.js" in page and '"keepH": true' in page
        assert ("frame-counter" in page) == (mode == "animate")
        assert "stopImmediatePropagation" in page and "capture: true" in page  # wheel scrolls the page
    page = viewer.viewer_html(ala2.topology, xyz, frame_labels=["</script>&"] * 3, fps=5)
    assert "\\u003c/script\\u003e\\u0026" in page and "}, 200);" in page  # 5 frames/s
    with pytest.raises(ValueError):
        viewer.viewer_html(ala2.topology, xyz, mode="spin")


def test_plain_escapes_markdown():
    assert plain("[x](javascript:alert(1)) <b>") == "\\[x\\]\\(javascript\\:alert\\(1\\)\\) \\<b\\>"
    assert plain("A\nB") == "A B"


def test_catalog():
    from arbg_core.checkpoint import Card, CheckpointConfig, Coverage, ModelEntry, SystemSpec
    from arbg_core.model import ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    def entry(name, system=None, coverage=None, card=Card()):
        config = CheckpointConfig(ModelConfig(), TokenizerConfig(), system, coverage)
        return ModelEntry(name, Path(name), config, card)

    single = entry("ala2", SystemSpec("A", "capped", "p"), card=Card(tau=0.9))
    other = entry("aaa", SystemSpec("AAA", "zwitterionic", "p"))
    general = entry("t", coverage=Coverage("capped", (1, 4)))
    entries = [other, general, single]
    assert catalog.shipped_systems(entries) == [("A", "capped"), ("AAA", "zwitterionic")]
    assert [e.name for e in catalog.models_for(entries, "A", "capped")] == ["ala2", "t"]
    assert [e.name for e in catalog.models_for(entries, "AAAAA", "capped")] == []
    assert "length 1-4" in catalog.transferable_limits(entries, "AAAAA", "capped")[0]
    assert catalog.models_for(entries, "AA", "zwitterionic") == []
    assert general.transferable and not single.transferable and general.preset == "amber99sbildn-obc"
    assert single.tau == 0.9 and other.tau == 1.0
    assert catalog.system_label(("A", "capped")).startswith("alanine dipeptide")
    recipe = catalog.build_commands("GG", "capped")
    assert "arbg md GG --termini capped --ns 100" in recipe and "arbg train --data runs/md/GG-cap" in recipe
    assert ("arbg fit GG --termini capped --budget-hours 2 --out "
            '"${ARBG_USER_MODELS_DIR:-runs/user_models}/builds/GG-cap/fit"') in recipe


def test_job_reports_stages_and_eta(models_dir, ala2):
    """The background job: progress snapshots go queued -> sample -> energy -> mirror (the
    mirror images of the samples whose weight can matter), with an ETA."""
    from arbg_core import checkpoint
    from arbg_core.pipeline import SampleConfig

    from app_lib.jobs import Job

    loaded = checkpoint.load(models_dir / "tiny")
    job = Job(loaded, ala2, SampleConfig(n=96, batch_size=32, seed=0, energy_chunk=16), "test").start()
    seen = []
    while job.running:
        seen.append(job.snapshot())
        job.wait(0.01)
    assert job.error is None and job.result.ensemble.n == 96
    stages = [s["stage"] for s in seen]
    order = ["queued", "sample", "energy", "mirror", "reweight"]
    assert stages[0] in ("queued", "sample") and stages == sorted(stages, key=order.index)  # never backwards
    assert job.meta["threads"] >= 1
    assert any("ETA" in s["text"] for s in seen if s["stage"] == "sample")
    assert all(0.0 <= s["fraction"] <= 1.0 for s in seen)


def test_streamlit_config():
    import tomllib

    REPO = Path(__file__).resolve().parents[2]

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableStaticServing"] is True
    assert config["server"]["maxUploadSize"] == upload.MAX_UPLOAD_MB
    assert config["browser"]["gatherUsageStats"] is False
    assert viewer.JS_FILE.is_file(), "static/3Dmol-min.js missing: run make setup"


def test_reference_path_prefers_the_system_of_a_transferable_model(tmp_path, monkeypatch):
    from app_lib.paths import reference_path

    monkeypatch.setenv("ARBG_REFERENCE_DIR", str(tmp_path))
    assert reference_path("general", "AR-zw") is None
    (tmp_path / "general.npz").write_bytes(b"x")
    assert reference_path("general", "AR-zw") == tmp_path / "general.npz"
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "AR-zw.npz").write_bytes(b"x")
    assert reference_path("general", "AR-zw") == tmp_path / "general" / "AR-zw.npz"
    assert reference_path("general", "GS-zw") == tmp_path / "general.npz"
    assert reference_path("general") == tmp_path / "general.npz"


@pytest.mark.parametrize("sequence,termini", [("AAA", "capped"), ("KLVFF", "zwitterionic"),
                                              ("GYDPETGTWG", "zwitterionic"), ("HMRSW", "capped")])
def test_build_time_estimate_counts_atoms_like_the_builder(sequence, termini):
    from arbg_core import checkpoint, peptide

    from app_lib import estimates

    assert estimates.n_atoms(sequence, termini) == peptide.build(sequence, termini).n_atoms
    t = estimates.build_time(sequence, termini, checkpoint.list_shipped())
    assert t.md_h > 0 and t.train_cpu_h > t.train_gpu_h > 0  # the shipped cards measured both
    assert "h" in t.text() or "min" in t.text() or "days" in t.text()


def test_md_rate_follows_the_measured_points():
    from app_lib import estimates

    assert estimates.md_ns_per_day(22) == pytest.approx(2700.7, rel=1e-3)  # results/energy.json
    assert estimates.md_ns_per_day(138) < estimates.md_ns_per_day(63) < estimates.md_ns_per_day(22)
    assert estimates.md_ns_per_day(300) < estimates.md_ns_per_day(138)  # extrapolated
