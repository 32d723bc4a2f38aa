"""3Dmol.js views as HTML for `st.iframe`, built from our own topology and coordinates only.

The iframe runs scripts with the app's origin, and py3Dmol embeds model text with `json.dumps`,
which leaves `</script>` intact. So no uploaded text ever goes in: PDB text is written here from
an mdtraj topology produced by the peptide builder, every name is checked against a small
alphabet, and the finished page is checked to hold exactly the scripts we wrote.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

JS_URL = "/app/static/3Dmol-min.js"  # served by Streamlit from static/ (enableStaticServing)
JS_FILE = Path(__file__).resolve().parent.parent / "static" / "3Dmol-min.js"  # `make setup` puts it there
# One colour per residue, cycled (colour-blind-safe Okabe-Ito, then a few more).
RESIDUE_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#D55E00", "#CC79A7", "#0072B2", "#F0E442",
                  "#999999", "#882255", "#44AA99")
_TOKEN = re.compile(r"[A-Za-z0-9']{1,4}")
_PDB_SAFE = re.compile(r"[A-Za-z0-9 .\-'\n]*")


def _token(name: str, fallback: str) -> str:
    return name if _TOKEN.fullmatch(name or "") else fallback


def superpose(topology, xyz: np.ndarray) -> np.ndarray:
    """(n, A, 3) nm superposed on the backbone (or all atoms) of the first frame."""
    from .run import trajectory

    traj = trajectory(topology, xyz)
    atoms = topology.select("backbone")
    traj.superpose(traj, 0, atom_indices=atoms if len(atoms) >= 3 else None)
    return traj.xyz


def pdb_text(topology, xyz: np.ndarray, conect: bool = True) -> str:
    """Multi-model PDB text (Å) of (n, A, 3) nm frames; CONECT from the topology in every model,
    so the chemical bonds are drawn even for a distorted sample.

    Not mdtraj's writer (exports.pdb_bytes, for files users keep): 3Dmol guesses the bonds of
    standard residues from distances unless every bond has a CONECT, and this text goes into a
    page that runs scripts, so every name is filtered and coordinates are clipped to the columns."""
    xyz = np.asarray(xyz, np.float64).reshape(-1, topology.n_atoms, 3) * 10.0
    xyz = np.clip(np.nan_to_num(xyz), -999.0, 9999.0)  # keep the fixed-width columns
    atoms = []
    for a in topology.atoms:
        name = _token(a.name, "X")
        elem = _token(a.element.symbol if a.element is not None else "", "X")[:2]
        atoms.append((f" {name:<3s}" if len(name) < 4 else name, _token(a.residue.name, "UNK")[:3],
                      a.residue.index + 1, elem))
    bonds: dict[int, list[int]] = {}
    if conect:
        for b in topology.bonds:
            i, j = b[0].index, b[1].index
            bonds.setdefault(i, []).append(j)
            bonds.setdefault(j, []).append(i)
    conect_lines = [f"CONECT{i + 1:5d}" + "".join(f"{j + 1:5d}" for j in partners[k:k + 4])
                    for i, partners in sorted(bonds.items()) for k in range(0, len(partners), 4)]
    lines = []
    for m, frame in enumerate(xyz):
        lines.append(f"MODEL     {m + 1:4d}")
        for s, ((name, res, resi, elem), (x, y, z)) in enumerate(zip(atoms, frame)):
            lines.append(f"ATOM  {s + 1:5d} {name:4s} {res:>3s} A{resi:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {elem:>2s}")
        lines += conect_lines + ["ENDMDL"]
    text = "\n".join(lines + ["END"]) + "\n"
    assert _PDB_SAFE.fullmatch(text), "PDB text for the viewer must hold only safe characters"
    return text


def viewer_html(topology, xyz: np.ndarray, mode: str = "animate", color: str = "residue",
                fps: float = 4.0, frame_labels: list[str] | None = None, height: int = 480) -> str:
    """HTML of a 3Dmol view of frames (n, A, 3) nm, superposed on the backbone.

    mode: "animate" (frames in turn, play/pause, frame counter), "overlay" (all at once) or
    "single" (the first frame). color: "residue" (one colour per residue) or "element".
    """
    import py3Dmol

    if mode not in ("animate", "overlay", "single"):
        raise ValueError(f"unknown view mode {mode!r}")
    xyz = superpose(topology, xyz)[: 1 if mode == "single" else None]
    text = pdb_text(topology, xyz)
    view = py3Dmol.view(js=JS_URL, width="100%", height=height)
    options = {"keepH": True}  # 3Dmol's PDB parser drops hydrogens without it
    if mode == "overlay":
        view.addModels(text, "pdb", options)
    else:
        view.addModelsAsFrames(text, "pdb", options)
    if color == "residue":
        view.setStyle({}, {"stick": {"radius": 0.15}})
        for r in range(topology.n_residues):
            view.setStyle({"resi": r + 1}, {"stick": {"radius": 0.15,
                                                      "color": RESIDUE_COLORS[r % len(RESIDUE_COLORS)]}})
    else:
        view.setStyle({}, {"stick": {"radius": 0.15, "colorscheme": "Jmol"}})
    view.zoomTo()
    page = view.write_html()  # one <script> block, ids made unique by py3Dmol
    if color == "residue":
        page += _legend(topology)
    n = len(xyz)
    if mode == "animate":
        labels = [str(s) for s in (frame_labels or [f"frame {i + 1}" for i in range(n)])]
        page += _player(view.uniqueid, n, fps, labels)
    page += _wheel_guard(view.uniqueid)
    _check_scripts(page, expected=3 if mode == "animate" else 2)
    return page


def _wheel_guard(uid: str) -> str:
    """The mouse wheel scrolls the app's page until the view is clicked (then it zooms), and
    again once the pointer leaves the view: a view must not capture the page's scrolling. The
    guard stops the wheel event before 3Dmol sees it, without preventDefault, so the browser
    scrolls the page around the frame."""
    uid = re.sub(r"[^0-9]", "", str(uid))
    return f"""
<div id="hint_{uid}" style="font:12px sans-serif;color:#666">Click the view to zoom with the
 mouse wheel; drag to rotate.</div>
<script>
(function() {{
  var active = false, view = document.getElementById("3dmolviewer_{uid}");
  var hint = document.getElementById("hint_{uid}");
  window.addEventListener("wheel", function(e) {{
    if (!active) e.stopImmediatePropagation();
  }}, {{capture: true}});
  view.addEventListener("mousedown", function() {{
    active = true; hint.textContent = "Mouse wheel zooms the view (move the pointer out to scroll the page).";
  }});
  view.addEventListener("mouseleave", function() {{
    active = false; hint.textContent = "Click the view to zoom with the mouse wheel; drag to rotate.";
  }});
}})();
</script>
"""


def _legend(topology) -> str:
    """Residue colour key; names pass the same alphabet check as the PDB text, then html.escape."""
    items = [f'<span style="color:{RESIDUE_COLORS[r.index % len(RESIDUE_COLORS)]}">&#9632;</span> '
             f'{html.escape(_token(r.name, "UNK"))}{r.index + 1}' for r in topology.residues]
    return f'<div style="font:13px sans-serif;margin-top:4px">{" &nbsp; ".join(items)}</div>'


def _player(uid: str, n: int, fps: float, labels: list[str]) -> str:
    """Play/pause, step and a frame counter below the view. Labels go in as JSON with '<' '>' '&'
    as unicode escapes (so they cannot close the script) and out through textContent (never
    parsed as HTML)."""
    ms = int(1000 / max(float(fps), 0.1))
    safe = json.dumps(labels).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    uid = re.sub(r"[^0-9]", "", str(uid))
    return f"""
<div style="font:14px sans-serif;margin-top:4px">
 <button id="play_{uid}" type="button">Pause</button>
 <button id="prev_{uid}" type="button">&#9664;</button>
 <button id="next_{uid}" type="button">&#9654;</button>
 <span id="count_{uid}" data-testid="frame-counter">frame 1 / {n}</span>
</div>
<script>
$3Dmolpromise.then(function() {{
  var v = viewer_{uid}, n = {n}, i = 0, playing = n > 1, labels = {safe};
  var count = document.getElementById("count_{uid}"), play = document.getElementById("play_{uid}");
  function show(k) {{
    i = ((k % n) + n) % n;
    v.setFrame(i).then(function() {{ v.render(); }});
    count.textContent = "frame " + (i + 1) + " / " + n + " \u2014 " + labels[i];
  }}
  function step(d) {{ playing = false; play.textContent = "Play"; show(i + d); }}
  play.onclick = function() {{ playing = !playing; play.textContent = playing ? "Pause" : "Play"; }};
  document.getElementById("prev_{uid}").onclick = function() {{ step(-1); }};
  document.getElementById("next_{uid}").onclick = function() {{ step(1); }};
  if (n < 2) play.disabled = true;
  show(0);
  setInterval(function() {{ if (playing) show(i + 1); }}, {ms});
}});
</script>
"""


def _check_scripts(page: str, expected: int) -> None:
    """Refuse to render a page with script tags we did not write (defence in depth)."""
    opened = len(re.findall(r"<script", page, flags=re.I))
    closed = len(re.findall(r"</script", page, flags=re.I))
    if opened != expected or closed != expected:
        raise ValueError("refusing to render a 3D view with unexpected script tags")
