"""Issues #18 and #17 (item 5): bad uploads and bad run records, refused with a plain message that
names the file and the problem: no stack trace, no server path, no raw exception text."""

import json
import math
import os
import tomllib
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from app_lib import upload

REPO = Path(__file__).resolve().parents[2]
LEAKS = ("/tmp", "arbg-upload", "trajectory.", "topology.pdb", "Errno", "Error:", "Traceback")


def refused(files, topology, match, **kw) -> str:
    """The upload is refused with a message that contains `match` and leaks nothing."""
    with pytest.raises(upload.UploadError) as e:
        upload.reference_from_upload(files, topology, **kw)
    text = str(e.value)
    assert match.lower() in text.lower(), text
    assert not [leak for leak in LEAKS if leak in text], text
    assert "\n" not in text
    return text


@pytest.mark.parametrize("ext", ["xtc", "trr", "dcd"])
def test_cut_inside_a_frame(files, ala2, ext):
    data = files[ext]
    text = refused([("top.pdb", files["top"]), (f"run.{ext}", data[: len(data) * 2 // 3 + 3])],
                   ala2.topology, "truncated")
    assert f"run.{ext}" in text


def test_dcd_cut_between_frames_is_caught_by_its_header(files, ala2):
    data = files["dcd"]
    frame = (len(data) - 276) // 20
    refused([("top.pdb", files["top"]), ("run.dcd", data[: 276 + 10 * frame])], ala2.topology,
            "10 of the 20 frames")


@pytest.mark.parametrize("text", [b"REMARK   1 nothing here\nEND\n", b"MODEL        1\nENDMDL\nEND\n"],
                         ids=["no models", "an empty model"])
def test_pdb_without_atoms(ala2, text):
    refused([("md.pdb", text)], ala2.topology, "md.pdb")


def test_first_model_is_checked_before_the_rest_is_parsed(files, ala2):
    """21 atoms in the first model, then models no parser could read: the atom count decides."""
    lines = files["pdb"].decode().splitlines()
    first_h = next(i for i, l in enumerate(lines) if l.startswith("ATOM"))
    junk = "MODEL        2\n" + "ATOM  garbage\n" * 5000 + "ENDMDL\n"
    data = ("\n".join(lines[:first_h] + lines[first_h + 1:]) + "\n" + junk * 3).encode()
    refused([("md.pdb", data)], ala2.topology, "21 atoms")


@pytest.mark.parametrize("ext", ["dcd", "pdb", "xtc"])
def test_frame_cap(files, ala2, ext):
    pair = [("md.pdb", files["pdb"])] if ext == "pdb" else [("top.pdb", files["top"]), (f"t.{ext}", files[ext])]
    refused(pair, ala2.topology, "10 frames", max_frames=10)


def test_text_as_topology_is_a_topology_problem(files, ala2):
    text = refused([("notes.pdb", b"these are my notes, not a structure\n" * 20), ("t.dcd", files["dcd"])],
                   ala2.topology, "topology")
    assert "notes.pdb" in text


def test_random_dcd_names_the_upload_not_a_server_path(files, ala2):
    text = refused([("top.pdb", files["top"]), ("mine.dcd", os.urandom(4000))], ala2.topology, "mine.dcd")
    assert "DCD" in text


@pytest.mark.parametrize("which", [0, 1])
def test_empty_file_is_named(files, ala2, which):
    pair = [("top.pdb", files["top"]), ("t.dcd", files["dcd"])]
    pair[which] = (pair[which][0], b"")
    refused(pair, ala2.topology, f"{pair[which][0]} is empty")


def test_non_finite_frames(files, ala2, tmp_path):
    xyz = np.repeat(ala2.xyz[None], 6, axis=0).astype(np.float32)
    xyz[4, 2, 1] = np.nan
    md.Trajectory(xyz, ala2.topology).save_dcd(str(tmp_path / "t.dcd"))
    refused([("top.pdb", files["top"]), ("t.dcd", (tmp_path / "t.dcd").read_bytes())], ala2.topology,
            "non-finite")


# ------------------------------------------------------------------------------- run records


def record(**settings) -> bytes:
    from app_lib.exports import RECORD_KIND

    s = {"sequence": "A", "termini": "capped", "model": "tiny", "n": 100, "tau": 1.0, "seed": 0,
         "method": "snis"} | settings
    return json.dumps({"kind": RECORD_KIND, "settings": s}).encode()


def test_record_ranges_are_the_widgets_ranges():
    from app_lib import state

    assert state.record_settings(record())["n"] == 100
    for bad in ({"n": 10**9}, {"n": 0}, {"seed": -1}, {"tau": math.nan}, {"tau": 100.0},
                {"method": "mcmc"}, {"n": 2.5}):
        with pytest.raises(ValueError):
            state.record_settings(record(**bad))


def test_record_out_of_range_leaves_the_widgets_alone(models_dir):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    n_before = at.number_input(key="home_n").value
    data = record(n=10**9).replace(b"1000000000", b"1e9")
    at.file_uploader(key="home_record").set_value(("r.json", data, "application/json")).run()
    assert any("20000" in e.value for e in at.error)
    assert at.number_input(key="home_n").value == n_before


def test_streamlit_shows_no_error_details():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] in ("none", False)
