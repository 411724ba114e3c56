"""Every script in scripts/ answers --help (exit status 0, a description, nothing run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "scripts").iterdir() if p.suffix in (".py", ".sh"))


def test_the_list_is_the_folder():
    assert {"setup.sh", "gpu_check.sh", "numpy_matches_torch.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_answers_help(name, tmp_path):
    path = REPO / "scripts" / name
    cmd = ["bash", str(path), "--help"] if name.endswith(".sh") else [sys.executable, str(path), "--help"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert p.returncode == 0, (name, p.stdout, p.stderr)
    assert len(p.stdout.strip().splitlines()) >= 2 and "Traceback" not in p.stderr, (name, p.stdout, p.stderr)
    assert list(tmp_path.iterdir()) == [], f"{name} --help wrote files"
