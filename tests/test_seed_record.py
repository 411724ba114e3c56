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
    check_ten_epochs_evaluated(run)


def check_ten_epochs_evaluated(run: Path) -> list[dict]:
    """Ten epochs of all 60,000 images, the final weights evaluated on the 10,000 test images, the curves drawn;
    the rows."""
    rows = read_metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert all(int(r["examples"]) == 60000 for r in rows)
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["images"] == 10000
    assert evaluation["accuracy"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-4)
    assert (run / "curves.png").stat().st_size > 10_000
    return rows


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


FP32 = SEED / "fp32_seed0"          # more_runs/seed0_again again, in float32
TWIN = SEED / "more_runs" / "seed0_again"


def test_the_float32_run_is_seed0_again_without_bf16():
    """Same recipe, seed, channels_last (so the same init, order and dropout masks) as its bf16 twin: only the
    precision and the folder differ (and `resume`: it was stopped after epoch 6 and continued, which gives the
    uninterrupted run's numbers, tests/test_train_kill.py); its ten epochs are on the page beside the twin's."""
    twin, fp32 = (json.loads((run / "config.json").read_text()) for run in (TWIN, FP32))
    assert {k for k in twin.keys() | fp32.keys() if twin.get(k) != fp32.get(k)} == {"amp", "out", "resume"}
    assert (twin["amp"], fp32["amp"], fp32["channels_last"]) == ("bf16", "none", True)
    rows = check_ten_epochs_evaluated(FP32)
    lines = (SEED / "README.md").read_text().splitlines()
    for ours, theirs in zip(rows, read_metrics(TWIN)):
        row = f"| {int(ours['epoch'])} | {float(ours['test_acc']):.4f} | {float(theirs['test_acc']):.4f} |"
        assert any(line.strip().startswith(row) for line in lines), row
    assert (FP32 / "bf16_vs_fp32.png").stat().st_size > 10_000


def test_compare_runs_takes_the_spread_where_every_run_has_an_epoch(tmp_path):
    """A run stopped early (the float32 run's first six epochs) is compared at its last epoch, the other's same
    epoch; the precision that differs is named."""
    import os
    import shutil
    import statistics
    import subprocess
    import sys

    stopped = tmp_path / "fp32_stopped"
    stopped.mkdir()
    shutil.copy(FP32 / "config.json", stopped)
    lines = (FP32 / "metrics.csv").read_text().splitlines(keepends=True)
    (stopped / "metrics.csv").write_text("".join(lines[:1 + 6]))
    script = SEED.parents[2] / "scripts" / "compare_runs.py"
    env = dict(os.environ, PYTHONPATH=str(SEED.parents[2]))
    p = subprocess.run([sys.executable, str(script), str(TWIN), str(stopped)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    accs = [float(read_metrics(run)[5]["test_acc"]) for run in (TWIN, stopped)]
    assert "amp: 'bf16' -> 'none'" in p.stdout, p.stdout
    assert (f"test accuracy at epoch 6, the last all runs reached, over 2 run(s): mean "
            f"{statistics.mean(accs):.4f}") in p.stdout, p.stdout
