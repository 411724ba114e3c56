"""`python -m numpy_ref.exercises` and `python -m triton_kernels.lessons.exercises`: every exercise, started and
checked unchanged, fails and names its worst element; filled with the project's own body it passes. The blank
keeps the signature, the docstring and the shape comments, never the answer; workspaces stay out of the package."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import triton_kernels  # noqa: F401  (first: on a CPU it sets TRITON_INTERPRET before any kernel is defined)
from numpy_ref import exercises
from triton_kernels.lessons import exercises as triton_exercises

REPO = Path(__file__).resolve().parents[1]


def _fill_with_the_answer(ex: exercises.Exercise, path: Path) -> None:
    """Replace the blank function in the learner's file by the project's own (the imports `start` wrote stay)."""
    _, func = exercises.resolve(ex.target)
    text = path.read_text()
    name = exercises.function_name(ex)
    start = text.index("@triton.jit\ndef " if "triton" in ex.target else f"def {name}(")
    path.write_text(text[:start] + textwrap.dedent(inspect.getsource(func)))


def _start_check_fill_check(ex: exercises.Exercise, tmp_path: Path, prog: str, capsys) -> None:
    path = exercises.start(ex, tmp_path, prog=prog)
    assert path == tmp_path / f"{ex.name}.py"
    capsys.readouterr()
    assert exercises.check(ex, tmp_path, prog=prog) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "worst at (" in out and "expected" in out and ", got " in out, out
    _fill_with_the_answer(ex, path)
    assert exercises.check(ex, tmp_path, prog=prog) == 0, capsys.readouterr().out
    assert "comparisons pass" in capsys.readouterr().out


def test_at_least_eight_numpy_exercises_are_listed(capsys):
    assert exercises.main(["list"]) == 0
    out = capsys.readouterr().out
    assert len(exercises.EXERCISES) >= 8
    for name in ("conv2d_backward", "max_pool2d_backward", "local_response_norm_backward", "linear_backward",
                 "dropout_forward", "cross_entropy_backward", "sgd_step", "im2col"):
        assert name in exercises.EXERCISES and name in out
    assert f"{len(exercises.EXERCISES)} exercises" in out


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_numpy_exercise_fails_blank_and_passes_with_the_answer(name, tmp_path, capsys):
    _start_check_fill_check(exercises.EXERCISES[name], tmp_path, exercises.PROG, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(triton_exercises.TRITON_EXERCISES))
def test_triton_exercise_fails_blank_and_passes_with_the_answer(name, tmp_path, capsys):
    _start_check_fill_check(triton_exercises.TRITON_EXERCISES[name], tmp_path, triton_exercises.PROG, capsys)


def test_the_blank_keeps_docstring_and_shape_comments_not_the_answer():
    ex = exercises.EXERCISES["conv2d_backward"]
    text = exercises.workspace_text(ex)
    body = text[text.index("def conv2d_backward("):]
    assert '"""Three correlations with the same columns' in body          # the docstring
    assert "xp, weight, has_bias, g = cache" in body                      # the unpacking is given
    assert "#   dout2          (F, N*OH*OW)" in body                      # a shape comment of the answer
    assert exercises.PLACEHOLDER in body
    for answer in ("np.matmul", "_im2col(", "dcols6"):                    # no line of the answer's code
        assert answer not in body.replace("#   dcols6", ""), answer
    assert "from numpy_ref.functional import _im2col" in text             # what the answer needs is imported
    kernel = exercises.workspace_text(triton_exercises.TRITON_EXERCISES["triton_masked_load"], triton_exercises.PROG)
    assert "@triton.jit" in kernel and "BLOCK: tl.constexpr" in kernel and "import triton.language as tl" in kernel
    assert "#   mask           (BLOCK,) False past the end" in kernel and "tl.store(" not in kernel


def test_the_triton_list_has_both_kinds(capsys):
    assert triton_exercises.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "triton_masked_load" in out and "triton_tap_walk" in out and "conv2d_backward" in out


def test_workspace_default_and_refusals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exercises.main(["start", "relu_backward"]) == 0
    assert (tmp_path / "exercises" / "relu_backward.py").is_file()       # ./exercises in the current directory
    capsys.readouterr()
    assert exercises.main(["start", "relu_backward"]) == 2                        # never overwrites the learner's work
    assert "exists" in capsys.readouterr().err
    assert exercises.main(["start", "relu_backward", "--force"]) == 0
    assert exercises.main(["start", "relu_backward", "--dir", str(REPO / "numpy_ref" / "x")]) == 2
    assert "inside the numpy_ref package" in capsys.readouterr().err
    assert exercises.main(["check", "linear_backward"]) == 2                      # not started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "start linear_backward" in err
    assert exercises.main(["check", "nope"]) == 2
    assert "no exercise 'nope'" in capsys.readouterr().err
    assert exercises.main(["solution", "sgd_step"]) == 0
    assert "numpy_ref/optim.py, SGD.step" in capsys.readouterr().out


def test_learner_errors_show_their_traceback(tmp_path, capsys):
    ex = exercises.EXERCISES["relu_backward"]
    path = exercises.start(ex, tmp_path)
    path.write_text(path.read_text().replace(exercises.PLACEHOLDER, "raise RuntimeError('my bug')"))
    assert exercises.check(ex, tmp_path) == 1
    out = capsys.readouterr().out
    assert "your code raised" in out and "RuntimeError: my bug" in out
    path.write_text("def relu_backward(:\n")
    assert exercises.check(ex, tmp_path) == 1
    assert "does not run" in capsys.readouterr().out


def test_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "numpy_ref.exercises", "start", "im2col", "--dir", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and (tmp_path / "im2col.py").is_file(), proc.stderr
