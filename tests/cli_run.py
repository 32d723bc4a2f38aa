"""Running `arbg` from tests: in this process (imports once), or as a real second process."""

import subprocess
import sys
from pathlib import Path

from arbg_core import cli


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `arbg ARGV` in this process; an uncaught exception (a
    traceback for the user) fails the test where it is raised."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def refuses(capsys, *argv, match=None, out_dir=None):
    """`arbg ARGV` exits 2 with one line on stderr matching `match`; `out_dir` was not made."""
    rc, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2, f"exit code {rc}: {err[-2000:]}"
    assert len(lines) == 1, f"not one line: {err[-2000:]}"
    if match:
        assert any(m in lines[0].lower() for m in ([match] if isinstance(match, str) else match)), lines[0]
    if out_dir is not None:
        assert not Path(out_dir).exists(), f"partial output left at {out_dir}"
        left = [p.name for p in Path(out_dir).parent.iterdir() if p.name.startswith(".")]
        assert not left, f"temporary files left beside {out_dir}: {left}"
    return lines[0]


def arbg_process(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "arbg_core.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
