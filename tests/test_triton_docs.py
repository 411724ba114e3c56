"""docs/triton_kernels.md's commands still run and still print what the page says they print: the two pdb
recipes (each finds its kernel line with grep, so a moved line cannot make it stale), the worked example behind
`python -m triton_kernels.tile_demo`, and the spec counts it and the LRN and lessons pages quote."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import triton_kernels

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "triton_kernels.md"

interpreted_only = pytest.mark.skipif(not triton_kernels.INTERPRET, reason="the recipes step through the interpreter")


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def _demo_files() -> dict[str, str]:
    """The page's python blocks that open with `# NAME.py`: the scripts its console blocks run."""
    files = {}
    for block in _blocks("python"):
        first = block.splitlines()[0]
        if re.fullmatch(r"# \w+\.py", first):
            files[first[2:]] = block
    return files


def _pdb_recipes() -> list[tuple[list[str], list[str]]]:
    """(commands, expected output lines) of each console block that runs pdb."""
    recipes = []
    for block in _blocks("console"):
        if "python -m pdb" not in block:
            continue
        lines = block.rstrip("\n").splitlines()
        recipes.append(([ln[2:] for ln in lines if ln.startswith("$ ")], [ln for ln in lines if not ln.startswith("$ ")]))
    return recipes


def test_the_page_has_both_recipes():
    recipes = _pdb_recipes()
    assert len(recipes) == 2 and set(_demo_files()) == {"demo.py", "conv_demo.py"}
    for commands, expected in recipes:
        assert commands[0].startswith("LINE=$(grep -n "), "a recipe must find its line itself"
        assert expected, "a recipe must show what it prints"


@interpreted_only
@pytest.mark.parametrize("index", [0, 1], ids=["pool", "conv"])
def test_pdb_recipe_prints_what_the_page_shows(index, tmp_path):
    commands, expected = _pdb_recipes()[index]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the page's `python`
    (bin_dir / "python").chmod(0o755)
    script = "\n".join(commands)
    for name, text in _demo_files().items():
        (tmp_path / name).write_text(text)
        script = script.replace(f" {name}", f" {tmp_path / name}")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    got = proc.stdout.splitlines()
    missing = [line for line in expected if line not in got]
    assert proc.returncode == 0 and not missing, (
        f"the recipe no longer prints {missing}\n--- stdout:\n{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-3000:]}")


@interpreted_only
def test_tile_demo_shows_the_a_tile_is_numpy_refs_columns():
    """The worked example, run as a module: the A tile at the forward's tl.dot equals cols.T with k reordered."""
    from triton_kernels import tile_demo

    assert tile_demo.main() == 0


def test_the_quoted_spec_counts_are_the_real_ones():
    """Every spec count docs/triton_kernels.md, triton_lrn.md and triton_lessons.md quote, against the lists the
    codegen tool reads."""
    from triton_kernels import codegen_specs
    from triton_kernels.lessons import specs as lesson_specs

    ops, lessons = len(codegen_specs.SM90_COMPILE_SPECS), len(lesson_specs.SM90_COMPILE_SPECS)
    conv_pool, lrn = len(codegen_specs.CONV_SPECS) + len(codegen_specs.POOL_SPECS), len(codegen_specs.LRN_SPECS)
    docs = REPO / "docs"
    quotes = [  # (page, pattern, the real counts)
        ("triton_kernels.md", r"codegen_specs.py's full list has (\d+) specs", (ops,)),
        ("triton_kernels.md", r"a default run adds the\s+lessons' (\d+), (\d+) in all", (lessons, ops + lessons)),
        ("triton_kernels.md", r"conv.py's and pool.py's (\d+), the (\d+) that training compiles",
         (conv_pool, conv_pool - sum("fp64" in s["name"] for s in codegen_specs.CONV_SPECS))),
        ("triton_kernels.md", r"and lrn.py's (\d+)\s", (lrn,)),
        ("triton_lrn.md", r"the fast power: (\d+) specs", (lrn,)),
        ("triton_lessons.md", r"in bf16: (\d+) specs .*?compiles them after the ops' (\d+)\)", (lessons, ops)),
    ]
    for page, pattern, real in quotes:
        quoted = re.search(pattern, (docs / page).read_text(), flags=re.S)
        assert quoted, f"{page} no longer says {pattern!r}"
        assert tuple(int(g) for g in quoted.groups()) == real, (page, quoted.group(0), real)
