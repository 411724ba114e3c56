"""Every script in scripts/ answers --help (exit status 0, a description, nothing run); d2l_pixels.py, which the seed
page quotes, also runs on a few real test images."""
import os
import re
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


def test_d2l_pixels_measures_both_inputs_and_the_network_on_each(real_data_dir, tmp_path):
    """d2l's PIL-resized 8-bit pixels sit within one grey level of ours (PIL rounds after each of its two passes), and
    the script runs a checkpoint on both: its two accuracies and the predictions that differ."""
    from probe_checkpoint import shared_probe_checkpoint

    probe = shared_probe_checkpoint(real_data_dir)
    cmd = [sys.executable, str(REPO / "scripts" / "d2l_pixels.py"), "--images", "30", "--batch", "16",
           "--checkpoint", str(probe), "--data-dir", str(real_data_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 0, p.stderr
    pixels, network = p.stdout.strip().splitlines()
    largest = float(pixels.split("by at most ")[1].split(" grey")[0])
    assert 0 < largest <= 1.0 + 1e-3 and "further apart" not in pixels, pixels
    m = re.fullmatch(rf"{re.escape(str(probe))} in float32: accuracy (\d\.\d{{4}}) on our pixels, (\d\.\d{{4}}) on "
                     r"d2l's; (\d+) of 30 predictions differ", network)
    assert m and all(0 <= float(a) <= 1 for a in m.groups()[:2]) and int(m[3]) <= 30, network


def test_d2l_pixels_refuses_a_missing_checkpoint_naming_it(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "d2l_pixels.py"), "--checkpoint", str(tmp_path / "nope.pt")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode == 2 and "nope.pt" in p.stderr and "Traceback" not in p.stderr, p.stderr
