"""Every shell command docs/numpy_reference.md, docs/triton_lessons.md and docs/triton_kernels.md quote (the lines of
their ```bash blocks, the `$ ` lines of the others) is run here, and where a page shows what a command prints, the
lines it shows are checked against the real output ("..." lines stand for the rows left out).

Commands whose point is a timing or a GPU run are run with --help (or --dry-run, or --list) instead: the table
HOW says so for each, and a command a page quotes that HOW does not know fails test_every_quoted_command_is_known,
so a new one cannot slip in unchecked. The kernel code the lesson page quotes (its python and diff blocks) is
checked to be the lesson files' own, line for line.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import triton_kernels

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = ("numpy_reference.md", "triton_lessons.md", "triton_kernels.md")

# command as quoted -> how it is checked: "run" (output lines checked where the page shows any), "help" (a timing
# or training: the command with --help must work), "list" (codegen: --list; compiling is
# tests/test_triton_lessons.py's codegen test), "dry-run", or "tested in FILE" (that test file runs it).
HOW = {
    "alexnet gradcheck": "run",
    "alexnet gradcheck --op relu --tol 1e-9": "run",
    "python -m numpy_ref.exercises list": "run",
    "python -m numpy_ref.exercises start conv2d_backward": "run",
    "python -m numpy_ref.exercises check conv2d_backward": "run",
    "python -m numpy_ref.walkthrough --index 3": "run",
    "alexnet export --checkpoint runs/viz/best.pt --out viz.npz": "run",
    "python -m numpy_ref.walkthrough --weights viz.npz --index 4": "run",
    "alexnet bench numpy --threads 1": "help",
    "python -m triton_kernels.lessons.step0_primer": "run",
    "python -m triton_kernels.lessons.step1_direct_conv": "run",
    "alexnet bench lessons": "help",
    "python -m triton_kernels.codegen --module triton_kernels.lessons.specs": "list",
    "python -m triton_kernels.lessons.exercises list": "run",
    "python -m pytest tests/test_triton_lessons.py": "tested in tests/test_triton_lessons.py",
    "pdb recipe: triton_kernels/lessons/step0_primer.py": "run",
    "pdb recipe: triton_kernels/pool.py": "tested in tests/test_triton_docs.py",
    "pdb recipe: triton_kernels/conv.py": "tested in tests/test_triton_docs.py",
    "python -m triton_kernels.codegen --sample --module triton_kernels.codegen_specs": "tested in "
                                                                                      "tests/test_triton_codegen.py",
    "bash scripts/gpu_check.sh OUTDIR": "dry-run",
    "python -m triton_kernels.walkthrough": "run",
}


def quoted(page: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines the page shows after it) for every command of a page; a pdb recipe (a LINE=$(grep
    ...) line and its python -m pdb line) is one command, named by the file it breaks in."""
    found = []
    for kind, block in re.findall(r"```(\w*)\n(.*?)```", (DOCS / page).read_text(), flags=re.S):
        lines = block.rstrip("\n").splitlines()
        if kind in ("bash", "sh"):
            found += [(line.split("  #")[0].strip(), []) for line in lines
                      if line.strip() and not line.lstrip().startswith("#")]
        elif kind in ("console", ""):
            commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
            for n, i in enumerate(commands):
                end = commands[n + 1] if n + 1 < len(commands) else len(lines)
                cmd, shown = lines[i][2:].split("  #")[0].strip(), lines[i + 1:end]
                if cmd.startswith("LINE=$(grep"):
                    continue  # the recipe's first line: joined to its pdb line below
                if cmd.startswith("python -m pdb"):
                    target = re.search(r'-c "b (\S+?):\$LINE"', cmd).group(1)
                    found.append((f"pdb recipe: {target}", shown))
                else:
                    found.append((cmd, shown))
    return found


def _shown(page: str, command: str) -> list[str]:
    return next(shown for cmd, shown in quoted(page) if cmd == command)


def _env(tmp_path: Path) -> dict:
    """`python` and `alexnet` as the pages mean them: this interpreter, the checkout's torch_model."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, line in (("python", f'exec "{sys.executable}" "$@"'),
                       ("alexnet", f'exec "{sys.executable}" -m torch_model "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    path = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=path)


def run(command: str, tmp_path: Path, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", command], cwd=cwd or REPO, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def assert_shows(shown: list[str], out: str, mask=lambda line: line) -> None:
    """Every line the page shows (but "..." ones) is a line of the output, after `mask` on both sides."""
    got = [mask(line.rstrip()) for line in out.splitlines()]
    missing = [line for line in shown if line.strip() not in ("...", "") and mask(line.rstrip()) not in got]
    assert not missing, f"the page shows lines the command no longer prints: {missing}\n--- output:\n{out[-3000:]}"


def test_every_quoted_command_is_known():
    commands = {cmd for page in PAGES for cmd, _ in quoted(page)}
    assert commands == set(HOW), (f"quoted but not checked here: {sorted(commands - set(HOW))}; "
                                  f"checked here but no longer quoted: {sorted(set(HOW) - commands)}")


# what a "tested in FILE" command's test file must contain for the claim to hold
ELSEWHERE = {
    "python -m pytest tests/test_triton_lessons.py": "def test_conv_steps_match_torch",
    "pdb recipe: triton_kernels/pool.py": "def test_pdb_recipe_prints_what_the_page_shows",
    "pdb recipe: triton_kernels/conv.py": "def test_pdb_recipe_prints_what_the_page_shows",
    "python -m triton_kernels.codegen --sample --module triton_kernels.codegen_specs": "--sample",
}


def test_commands_tested_elsewhere_are_there():
    elsewhere = {c: how.removeprefix("tested in ") for c, how in HOW.items() if how.startswith("tested in ")}
    assert set(elsewhere) == set(ELSEWHERE)
    for command, path in elsewhere.items():
        assert ELSEWHERE[command] in (REPO / path).read_text(), (command, path)


@pytest.mark.parametrize("command", [c for c, how in HOW.items() if how in ("help", "list", "dry-run")])
def test_help_list_and_dry_run_commands(command, tmp_path):
    how = HOW[command]
    if how == "help":
        cmd = f"{command} --help"
    elif how == "list":
        cmd = f"{command} --list"
    else:
        cmd = command.replace("OUTDIR", f"--dry-run {tmp_path / 'out'}")
    proc = run(cmd, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if how == "list":
        from triton_kernels.lessons.specs import SM90_COMPILE_SPECS

        assert all(spec["name"] in proc.stdout for spec in SM90_COMPILE_SPECS)
    if command.startswith("alexnet bench numpy"):
        assert "--threads" in proc.stdout


def test_gradcheck_tables_are_what_it_prints(tmp_path):
    for command in ("alexnet gradcheck", "alexnet gradcheck --op relu --tol 1e-9"):
        proc = run(command, tmp_path, timeout=600)
        assert proc.returncode == (1 if "--tol 1e-9" in command else 0), proc.stderr
        assert_shows(_shown("numpy_reference.md", command), proc.stdout)


def test_exercise_commands_and_the_quoted_failure(tmp_path):
    shown = {cmd: out for cmd, out in quoted("numpy_reference.md")}
    listed = run("python -m numpy_ref.exercises list", tmp_path, cwd=tmp_path)
    assert listed.returncode == 0 and "9 exercises" in listed.stdout  # the page's "9 ops"
    assert "9 ops" in (DOCS / "numpy_reference.md").read_text()
    assert run("python -m numpy_ref.exercises start conv2d_backward", tmp_path, cwd=tmp_path).returncode == 0
    assert (tmp_path / "exercises" / "conv2d_backward.py").is_file()
    checked = run("python -m numpy_ref.exercises check conv2d_backward", tmp_path, cwd=tmp_path)
    assert checked.returncode == 1
    quote = re.search(r"`(worst at \(0, 0, 0, 0\): expected [^`]*)`", (DOCS / "numpy_reference.md").read_text(
        ).replace("\n", " ")).group(1)
    assert quote in checked.stdout, checked.stdout[-2000:]
    assert not shown["python -m numpy_ref.exercises check conv2d_backward"]
    assert run("python -m triton_kernels.lessons.exercises list", tmp_path, cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_walkthrough_output_is_what_the_page_shows(tmp_path, real_data_dir):
    """The untrained walkthrough line for line; the trained one's lines with the numbers masked (the page's run
    used docs/visualizing.md's checkpoint, this one the tests' probe checkpoint), export included."""
    from probe_checkpoint import shared_probe_checkpoint

    def with_data_dir(lines):
        return [line.replace("/usr/share/datasets/fashion-mnist", str(real_data_dir)) for line in lines]

    command = "python -m numpy_ref.walkthrough --index 3"
    proc = run(f"{command} --data-dir {real_data_dir}", tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert_shows(with_data_dir(_shown("numpy_reference.md", command)), proc.stdout)

    export = "alexnet export --checkpoint runs/viz/best.pt --out viz.npz"
    checkpoint = shared_probe_checkpoint(real_data_dir)
    proc = run(export.replace("runs/viz/best.pt", str(checkpoint)), tmp_path, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0 and (tmp_path / "viz.npz").is_file(), proc.stderr
    command = "python -m numpy_ref.walkthrough --weights viz.npz --index 4"
    proc = run(f"{command} --data-dir {real_data_dir}", tmp_path, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr

    def mask(line: str) -> str:  # the weights differ: keep the words and shapes, not the numbers or predictions
        line = line.split("; top 3:")[0]
        return re.sub(r"[-+]?\d+\.\d+%?", "#", line)
    assert_shows(with_data_dir(_shown("numpy_reference.md", command)), proc.stdout, mask)


@pytest.mark.slow
@pytest.mark.skipif(not triton_kernels.INTERPRET, reason="the lessons' commands are checked in the interpreter")
def test_lesson_and_walkthrough_commands_run(tmp_path):
    # (the primer's command: tests/test_triton_lessons.py::test_primer_runs_itself_and_masks_the_tail)
    proc = run("python -m triton_kernels.lessons.step1_direct_conv", tmp_path, timeout=600)
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = run("python -m triton_kernels.walkthrough", tmp_path, timeout=600)
    assert proc.returncode == 0 and "18 Linear" in proc.stdout and "TOO LARGE" not in proc.stdout, proc.stderr


@pytest.mark.skipif(not triton_kernels.INTERPRET, reason="the recipe steps through the interpreter")
def test_primer_pdb_recipe_prints_what_the_page_shows(tmp_path):
    block = next(b for b in re.findall(r"```console\n(.*?)```", (DOCS / "triton_lessons.md").read_text(), flags=re.S)
                 if "step0_primer" in b)
    script = "\n".join(line[2:] for line in block.splitlines() if line.startswith("$ "))
    proc = run(script, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_shows(_shown("triton_lessons.md", "pdb recipe: triton_kernels/lessons/step0_primer.py"), proc.stdout)


def _lesson_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in (REPO / "triton_kernels" / "lessons").glob("*.py")}


def test_quoted_kernels_are_the_lesson_files_own():
    """Each python block of the lesson page that holds a kernel is in a lesson file verbatim; each diff's hunks
    are, old side and new side, in the two files it names."""
    text, files = (DOCS / "triton_lessons.md").read_text(), _lesson_files()
    kernels = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if b.startswith("@triton.jit")]
    assert len(kernels) >= 5
    for block in kernels:
        assert any(block.rstrip("\n") in source for source in files.values()), block.splitlines()[1]
    diffs = re.findall(r"```diff\n(.*?)```", text, flags=re.S)
    assert len(diffs) == 3
    for diff in diffs:
        lines = diff.rstrip("\n").splitlines()
        old_name, new_name = lines[0].removeprefix("--- "), lines[1].removeprefix("+++ ")
        hunks, hunk = [], []
        for line in lines[2:]:
            if line.startswith("@@"):
                hunks.append(hunk)
                hunk = []
            else:
                hunk.append(line)
        hunks.append(hunk)
        for hunk in filter(None, hunks):
            old = "\n".join(line[1:] for line in hunk if line[:1] in (" ", "-"))
            new = "\n".join(line[1:] for line in hunk if line[:1] in (" ", "+"))
            assert old in files[old_name], (old_name, old[:200])
            assert new in files[new_name], (new_name, new[:200])


def test_no_machine_paths_and_no_private_notes():
    for page in PAGES:
        text = (DOCS / page).read_text()
        assert "/work/" not in text and "TRITON.md" not in text and "STYLE.md" not in text, page
