"""Every page through Streamlit's AppTest with the random-weight `tiny` checkpoint."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from app_helpers import FakeJob, messages, sample

REPO = Path(__file__).resolve().parents[2]

APP = str(REPO / "app.py")
PAGES = ["pages/1_Conformers.py", "pages/2_Ramachandran.py", "pages/3_Energy.py",
         "pages/4_Compare_with_MD.py", "pages/5_Export.py", "pages/6_How_it_works.py"]
N, SEED = 64, 3


def fresh() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def rendered(at: AppTest) -> str:
    """Every element's protobuf as text: everything the browser would receive."""
    out = []

    def walk(node):
        if getattr(node, "proto", None) is not None:
            out.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def srcdoc(element) -> str:
    return element.proto.srcdoc


@pytest.fixture(scope="module")
def home(models_dir):
    return sample(fresh())


@pytest.fixture(scope="module")
def run(home):
    return home.session_state["arbg_run"]


# ------------------------------------------------------------------------------------- Home


def test_home_defaults(models_dir):
    at = fresh()
    assert not at.exception
    assert at.selectbox(key="home_system").value == "A:capped"  # alanine dipeptide by default
    assert at.selectbox(key="home_model").value == "tiny"
    assert at.number_input(key="home_n").value == 2000
    assert at.number_input(key="home_tau::tiny").value == pytest.approx(1.0)  # from the card
    assert not at.selectbox(key="home_method").disabled  # SNIS or SMC


def test_smc_run_completes(models_dir):
    at = fresh()
    at.selectbox(key="home_method").set_value("SMC")
    sample(at, n=32)
    assert not at_errors(at)
    run = at.session_state["arbg_run"]
    assert run.ensemble.method == "smc" and run.ensemble.n == 32
    assert "SMC resampling steps" in set(at.dataframe[0].value["quantity"])


def test_default_run_completes(home, run):
    assert not at_errors(home)
    assert run.ensemble.n == N and run.result.config.seed == SEED
    assert any("Sampled 64 conformations" in s.label for s in home.status)
    labels = [m.label for m in home.metric]
    assert "ESS (effective samples)" in labels and "Device" in labels
    table = home.dataframe[0].value
    quantities = set(table["quantity"])
    assert {"device", "samples drawn", "kept", "mirrored", "dropped", "ESS", "largest weight"} <= quantities
    assert any(q.startswith("time: drawing samples") for q in quantities)
    assert sum(run.ensemble.counts[k] for k in ("kept", "mirrored", "dropped")) == N


def at_errors(at):
    return [e.value for e in at.exception] + [e.value for e in at.error]


def test_bad_sequence_shows_error(models_dir):
    at = fresh()
    at.radio(key="home_source").set_value("Type a sequence").run()
    at.text_input(key="home_sequence").set_value("AX<b>A").run()
    assert not at.exception
    text = messages(at.error)
    assert "Invalid sequence" in text and "position 2" in text
    assert "<b>" not in text  # user text is escaped for markdown


def test_no_models_folder(tmp_path, monkeypatch, models_dir):
    monkeypatch.setenv("ARBG_MODELS_DIR", str(tmp_path / "empty"))
    at = fresh()
    assert not at.exception
    assert "No models found" in messages(at.warning)
    assert at.radio(key="home_source").value == "Type a sequence"


def test_typed_sequence_with_a_transferable_model(tmp_path, monkeypatch, models_dir):
    import torch

    from arbg_core import checkpoint
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "models" / "general", ArBG(ModelConfig.preset("tiny")),
                    TokenizerConfig(n_bins=64, a=4.5, std=0.25), system=None, transferable=True,
                    card={"tau": 1.0}, extra={"termini": "zwitterionic", "lengths": [2, 3]})
    monkeypatch.setenv("ARBG_MODELS_DIR", str(tmp_path / "models"))
    at = fresh()
    assert at.radio(key="home_source").value == "Type a sequence"  # nothing single-system shipped
    at.text_input(key="home_sequence").set_value("aG").run()
    assert at.selectbox(key="home_model").value == "general"
    sample(at, n=16)
    run = at.session_state["arbg_run"]
    assert run.result.peptide.sequence == "AG" and run.ensemble.n == 16
    at.text_input(key="home_sequence").set_value("AGAG").run()  # outside its lengths
    assert "No shipped model covers AGAG" in messages(at.info)
    assert "samples zwitterionic peptides of length 2" in messages(at.caption)


def test_cannot_start_twice(models_dir):
    at = fresh()
    at.session_state["arbg_job"] = FakeJob()
    at.run()
    assert at.button(key="home_submit").disabled  # a run is in progress in this session
    assert "stopped by the test" in messages(at.error)
    assert "arbg_job" not in at.session_state


# ------------------------------------------------------------------------------------ pages


@pytest.mark.parametrize("page", PAGES)
def test_pages_without_a_run(models_dir, page):
    at = fresh()
    at.switch_page(page).run()
    assert not at.exception
    if "How_it_works" in page:
        assert at.get("plotly_chart")  # the tau demo works without a run
    else:
        assert "No samples yet" in messages(at.info)


def test_conformers(home, run):
    home.switch_page(PAGES[0]).run()
    assert not at_errors(home)
    html = srcdoc(home.get("iframe")[0])
    assert 'loadScriptAsync(\'/app/static/3Dmol-min.js\')' in html and "cdn" not in html.lower()
    assert '"keepH": true' in html and "frame-counter" in html and "stick" in html
    for mode in ("Overlay", "One at a time"):
        home.radio(key="conf_mode").set_value(mode).run()
        assert not at_errors(home) and home.get("iframe")
    home.radio(key="conf_which").set_value("Resampled ensemble").run()
    home.radio(key="conf_color").set_value("by element").run()
    assert not at_errors(home) and home.get("iframe")


def test_ramachandran_has_three_panels(home):
    home.switch_page(PAGES[1]).run()
    assert not at_errors(home)
    fig = json.loads(home.get("plotly_chart")[0].proto.spec)
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert any(t.startswith("proposal") for t in titles)
    assert any(t.startswith("reweighted") for t in titles)
    assert any(t.startswith("reference (shipped MD)") for t in titles)


def test_energy(home):
    home.switch_page(PAGES[2]).run()
    assert not at_errors(home)
    charts = home.get("plotly_chart")
    assert len(charts) == 2
    names = [t.get("name") for t in json.loads(charts[0].proto.spec)["data"]]
    assert names == ["proposal", "reweighted", "reference (shipped MD)"]


def test_how_it_works(home):
    home.switch_page(PAGES[5]).run()
    assert not at_errors(home)
    assert len(home.get("plotly_chart")) >= 4
    assert any("ESS of your run" == m.label for m in home.metric)


def test_compare_with_shipped_reference(home, run):
    home.switch_page(PAGES[3]).run()
    assert home.radio(key="cmp_source").value == "Shipped reference MD"
    home.slider(key="cmp_n_eval").set_value(200)
    home.button[0].click().run(timeout=120)
    assert not at_errors(home)
    table = home.table[0].value
    assert list(table.columns) == ["proposal", "reweighted", "noise floor (MD vs MD)"]
    assert list(table.index) == ["E-W2 (kT)", "T-W2 (rad)", "TICA-W2"]
    assert np.all(np.isfinite(table.to_numpy()))
    assert run.comparison.source == "shipped MD" and run.comparison.n_frames == 240
    verdicts = home.dataframe[0].value
    assert list(verdicts["distance"]) == ["E-W2 (kT)"] * 2 + ["T-W2 (rad)"] * 2 + ["TICA-W2"] * 2
    assert all(v.endswith("x") or v == "n/a" for v in verdicts["x noise floor"])
    assert all(any(w in v for w in ("noise floor", "different from MD")) for v in verdicts["verdict"])
    assert len(home.get("plotly_chart")) == 2
    names = [t.get("name") for t in json.loads(home.get("plotly_chart")[1].proto.spec)["data"]]
    assert names == ["proposal", "reweighted", "reference (shipped MD)"]


def _upload_single(at, name, data):
    at.switch_page(PAGES[3]).run()
    at.radio(key="cmp_source").set_value("Upload my trajectory").run()
    at.radio(key="cmp_kind").set_value("One multi-model PDB").run()
    at.file_uploader(key="cmp_single").set_value((name, data, "chemical/x-pdb")).run()
    assert not at.exception


def test_compare_upload_mismatch(home, ala2_pdb):
    lines = ala2_pdb.splitlines()
    missing = "\n".join(l for l in lines if not (l.startswith("ATOM") and l[12:16].strip() == "H1"))
    _upload_single(home, "short.pdb", (missing + "\n").encode())
    assert "atom count mismatch" in messages(home.error)

    swapped = list(lines)
    for i in range(len(lines)):  # swap the first two atoms of every model
        if lines[i].startswith("MODEL"):
            swapped[i + 1], swapped[i + 2] = lines[i + 2], lines[i + 1]
    _upload_single(home, "swapped.pdb", ("\n".join(swapped) + "\n").encode())
    assert "atom order mismatch at atom 1" in messages(home.error)


def test_compare_upload_topology_and_dcd(home, ala2, tmp_path):
    import mdtraj as md

    traj = md.Trajectory(np.repeat(ala2.xyz[None], 12, axis=0), ala2.topology)
    traj.save_dcd(str(tmp_path / "t.dcd"))
    traj[0].save_pdb(str(tmp_path / "top.pdb"))
    dcd = (tmp_path / "t.dcd").read_bytes()
    home.switch_page(PAGES[3]).run()
    home.radio(key="cmp_source").set_value("Upload my trajectory").run()
    home.radio(key="cmp_kind").set_value("Topology PDB + trajectory").run()
    home.file_uploader(key="cmp_top").set_value(("top.pdb", (tmp_path / "top.pdb").read_bytes(), "chemical/x-pdb"))
    home.file_uploader(key="cmp_traj").set_value(("t.dcd", dcd[: len(dcd) - 100], "application/octet-stream"))
    home.run()
    assert "DCD file is truncated" in messages(home.error)
    home.file_uploader(key="cmp_traj").set_value(("t.dcd", dcd, "application/octet-stream")).run()
    assert not home.error and "12 frames of 22 atoms match" in messages(home.success)


def test_compare_upload_script_payload_is_inert(home, ala2_pdb):
    payload = "</script><script>alert(1)</script>"
    _upload_single(home, "remark.pdb", (f"REMARK   1 {payload}\n" + ala2_pdb).encode())
    assert not home.error and "20 frames of 22 atoms match" in messages(home.success)
    assert "alert(1)" not in rendered(home)  # the REMARK goes nowhere

    bad = "\n".join(l[:17] + "</s" + l[20:] if l.startswith("ATOM") and l[17:20] == "ALA" else l
                    for l in ala2_pdb.splitlines()) + "\n"
    _upload_single(home, f"{payload}.pdb", (f"REMARK   1 {payload}\n" + bad).encode())
    text = messages(home.error)
    assert "atom order mismatch" in text
    assert "</s" not in text and "\\<\\/s" in text  # the residue name is shown escaped
    assert "alert(1)" not in rendered(home)  # nor does the file name appear anywhere


def test_export_page_and_files_parse_back(home, run, tmp_path):
    import zipfile

    import mdtraj as md
    import pandas as pd

    from app_lib import exports

    home.switch_page(PAGES[4]).run()
    assert not at_errors(home)
    assert len(home.get("download_button")) == 4

    (tmp_path / "s.pdb").write_bytes(exports.pdb_bytes(run.topology, run.xyz[:5]))
    traj = md.load(str(tmp_path / "s.pdb"))
    assert traj.n_frames == 5 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.xyz, run.xyz[:5], atol=2e-3)  # PDB keeps 0.001 nm

    with zipfile.ZipFile(io.BytesIO(exports.dcd_zip_bytes(run))) as z:
        z.extractall(tmp_path / "zip")
        assert set(z.namelist()) == {"topology.pdb", "samples.dcd", "samples.csv", "record.json", "README.txt"}
    traj = md.load(str(tmp_path / "zip" / "samples.dcd"), top=str(tmp_path / "zip" / "topology.pdb"))
    assert traj.n_frames == N
    np.testing.assert_allclose(traj.xyz, run.xyz, atol=1e-4)

    table = pd.read_csv(io.BytesIO(exports.csv_bytes(run)))
    assert len(table) == N
    assert {"weight", "log_q", "u_kT", "status", "phi_ALA2_deg", "psi_ALA2_deg"} <= set(table.columns)
    assert table["weight"].sum() == pytest.approx(1.0)
    assert set(table["status"]) <= {"kept", "mirrored", "dropped"}

    record = json.loads(exports.record_bytes(run))
    assert record["settings"] == {"sequence": "A", "termini": "capped", "model": "tiny",
                                  "preset": "amber99sbildn-obc", "n": N, "tau": 1.0, "seed": SEED,
                                  "method": "snis"}
    assert record["app_version"] and record["summary"]["counts"]["n"] == N
    assert "ess" in record["summary"] and "reproduce_cli" in record
    assert "--temperature is tau, the model's sampling temperature (not kelvin)" in record["reproduce_cli"]
    assert set(exports.column_help(table.columns)) == set(table.columns)  # every column explained


def test_record_reproduces_the_samples(home, run):
    from app_lib import exports

    at = fresh()
    at.file_uploader(key="home_record").set_value(("record.json", exports.record_bytes(run),
                                                   "application/json")).run()
    assert "Settings loaded" in messages(at.success)
    assert at.number_input(key="home_n").value == N and at.number_input(key="home_seed").value == SEED
    at.button(key="home_submit").click().run(timeout=120)
    again = at.session_state["arbg_run"]
    np.testing.assert_array_equal(again.result.xyz, run.result.xyz)  # the very same samples
    # their densities to float32 round-off: the runs' torch threads follow the free cores, and
    # 1 vs 2 threads sum the same logits in another order (ala2, 512 samples: |d log q| <= 8e-5)
    np.testing.assert_allclose(again.result.log_q, run.result.log_q, rtol=0, atol=1e-3)
    np.testing.assert_allclose(again.ensemble.weights, run.ensemble.weights, rtol=1e-3, atol=1e-12)


def test_record_upload_rejects_other_json(models_dir):
    at = fresh()
    at.file_uploader(key="home_record").set_value(("x.json", b'{"a": 1}', "application/json")).run()
    assert "not an arbg run record" in messages(at.error)


def test_every_page_with_a_transferable_dipeptide_run(tmp_path, monkeypatch, models_dir):
    """A zwitterionic dipeptide (no residue has both phi and psi) through every page, with the
    transferable model's per-system reference reference/MODEL/SYSTEM.npz overlaid."""
    import torch

    from arbg_core import checkpoint, peptide
    from arbg_core.data import FrameData, pdb_text_of
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "models" / "general", ArBG(ModelConfig.preset("tiny")),
                    TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                    card={"tau": 1.0}, extra={"termini": "zwitterionic", "lengths": [2, 2]})
    pep = peptide.build("AR", "zwitterionic")
    xyz = (pep.xyz[None] + 0.004 * np.random.default_rng(0).standard_normal((120, pep.n_atoms, 3))).astype(np.float32)
    empty = np.zeros((0, pep.n_atoms, 3), np.float32)
    FrameData(empty, empty, xyz, pep.features, pdb_text_of(pep.to_mdtraj()), {}).save(
        tmp_path / "reference" / "general" / "AR-zw.npz")
    monkeypatch.setenv("ARBG_MODELS_DIR", str(tmp_path / "models"))
    at = fresh()
    at.text_input(key="home_sequence").set_value("AR").run()
    sample(at, n=32)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at_errors(at), page
    at.switch_page(PAGES[1]).run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert {"reference (shipped MD)", "φ ARG2 / ψ ALA1"} <= set(titles), titles  # column, row


def test_home_previews_the_reference_md_until_a_run_exists(models_dir):
    """Before any run, Home shows the shipped reference MD as a Ramachandran map (the same
    figure the Ramachandran page draws it in); once the run is there, that page has it."""
    at = fresh()
    assert not at.exception
    labels = [e.label for e in at.expander]
    assert any("What molecular dynamics says" in lab for lab in labels)
    assert "reference (shipped MD)" in rendered(at)
    sample(at, n=32)
    assert not any("What molecular dynamics says" in e.label for e in at.expander)
