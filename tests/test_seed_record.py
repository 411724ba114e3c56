"""The committed record of the seed's full runs (docs/results/seed/ and its more_runs/): each is the seed's recipe run
to the end, its files agree with each other, and the page quotes their figures."""
import json
from pathlib import Path

import pytest

from torch_model.checkpoint import read_metrics

SEED = Path(__file__).resolve().parents[1] / "docs" / "results" / "seed"
RUNS = [SEED, *sorted(p for p in (SEED / "more_runs").iterdir() if p.is_dir())]
# the seed's recipe as d2l's chapter runs it; anything else in config.json is where and how it ran
RECIPE = dict(epochs=10, batch_size=128, lr=0.01, resize=224, variant="d2l", momentum=0.0, weight_decay=0.0,
              pixels="unit", limit_train=None, limit_test=None, dataset="fashion-mnist", backend="torch")


def test_there_are_six_runs():
    assert [p.name for p in RUNS[1:]] == ["seed0_again", "seed1", "seed2", "seed3", "seed4"]


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_a_run_is_the_seed_recipe_run_to_the_end(run):
    config = json.loads((run / "config.json").read_text())
    assert {k: config[k] for k in RECIPE} == RECIPE
    assert not str(config["out"]).startswith("/"), "a path of the machine it ran on"
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert all(int(r["examples"]) == 60000 for r in rows)
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["images"] == 10000
    assert evaluation["accuracy"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-4)
    assert (run / "curves.png").stat().st_size > 10_000


def test_the_page_quotes_every_runs_figures():
    page = (SEED / "README.md").read_text()
    for run in RUNS:
        last = read_metrics(run)[-1]
        for figure in (f"{float(last['test_acc']):.4f}", f"{float(last['loss']):.3f}",
                       f"{float(last['train_acc']):.3f}"):
            assert figure in page, (run.name, figure)
    assert "runs.png" in page and (SEED / "runs.png").is_file()


def test_compare_runs_prints_the_spread_the_page_quotes(tmp_path):
    """scripts/compare_runs.py over the committed runs: one row each, the mean and sample std of the last test
    accuracies as statistics computes them, and the PNG; a folder that is not a run is named, exit status 2."""
    import os
    import statistics
    import subprocess
    import sys

    script = SEED.parents[2] / "scripts" / "compare_runs.py"
    env = dict(os.environ, PYTHONPATH=str(SEED.parents[2]))
    p = subprocess.run([sys.executable, str(script), *map(str, RUNS), "--out", str(tmp_path / "runs.png")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    finals = [read_metrics(run)[-1]["test_acc"] for run in RUNS]
    lines = p.stdout.splitlines()
    assert len(lines) == 1 + len(RUNS) + 2, p.stdout                  # header, a row per run, the spread, wrote
    mean, std = statistics.mean(finals), statistics.stdev(finals)
    assert f"over {len(RUNS)} run(s): mean {mean:.4f}, sample std {std:.4f}" in lines[-2], lines[-2]
    assert f"mean {mean:.4f} with a sample standard deviation of {std:.4f}" in (SEED / "README.md").read_text()
    assert (tmp_path / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 2 and f"{tmp_path / 'metrics.csv'}: not readable" in p.stderr, p.stderr
