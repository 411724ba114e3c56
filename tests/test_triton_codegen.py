"""`python -m triton_kernels.codegen`: the sm_90 codegen check that runs without a GPU.

CI compiles one spec per kernel (--sample, bf16 where there is one) so that a kernel that no longer compiles for
the H200 fails the suite; scripts/gpu_check.sh compiles every spec. Each test starts a fresh interpreter: the
kernels imported into this process were defined for the Triton interpreter and cannot be compiled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import importlib

from conftest import CUDA
from triton_kernels import codegen
from triton_kernels.codegen import _occupancy, _select

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], interpret: str | None, extra_path: Path | None = None, timeout: int = 600):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, REPO) if p) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "triton_kernels.codegen", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _all_specs():
    return [(m, s) for m in codegen.DEFAULT_MODULES for s in importlib.import_module(m).SM90_COMPILE_SPECS]


def test_list_reexecs_out_of_the_interpreter():
    """From an interpreter session (what `import triton_kernels` gives on a CPU box) --list still works: main()
    starts itself again with TRITON_INTERPRET=0 and lists every spec of the default modules: conv's, pool's and
    LRN's from codegen_specs, then every lesson step's."""
    proc = _run(["--list"], interpret="1" if not CUDA else None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = proc.stdout.strip().splitlines()
    expected = [f"{mod}: {s['name']}" for mod, s in _all_specs()]
    assert listed == expected
    assert len(set(expected)) == len(expected), "two specs share a name"
    from triton_kernels.lessons import STEPS

    kinds = {line.split(": ")[1].split("[")[0].split(".")[0]: line.split(": ")[0] for line in listed}
    ops = {"conv2d_fwd", "conv2d_fwd_small_c", "conv2d_dgrad", "conv2d_wgrad", "conv2d_bias_grad",
           "max_pool2d_fwd", "max_pool2d_bwd", "lrn_fwd", "lrn_bwd"}
    assert kinds == {**{k: "triton_kernels.codegen_specs" for k in ops},
                     **{k: "triton_kernels.lessons.specs" for k in STEPS}}, kinds


def test_sample_compiles_for_sm90(tmp_path):
    """One spec per kernel compiles for sm_90; the conv GEMMs use tensor cores in bf16; the pools do not spill."""
    out = tmp_path / "codegen.json"
    proc = _run(["--sample", "--jobs", "2", "--json", str(out)], interpret="0")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    rows = {r["kernel"]: r for r in doc["results"]}
    kernels = {getattr(s["fn"], "__name__", None) or s["fn"].fn.__name__ for _, s in _all_specs()}
    assert set(rows) == kernels, f"sampled {sorted(rows)}, specs have {sorted(kernels)}"
    for name, r in rows.items():
        assert r["ok"] and r["registers"] > 0, r
        assert f"{r['name']}" in proc.stdout, f"{r['name']} missing from the printed table"
    for name, r in rows.items():
        if r["module"] != "triton_kernels.codegen_specs":
            continue  # the lessons' kernels: tests/test_triton_lessons.py checks each step's facts
        if name.startswith("_conv2d_") and "bias" not in name:
            assert r["dtype"] == "bf16" and r["tensor_cores"], f"{name}: no wgmma/mma in bf16: {r}"
        if name.startswith(("_max_pool2d", "_lrn")):  # memory-bound elementwise walks: no spills, no MMA
            assert r["spill_stores"] == 0 and r["stack_bytes"] == 0, f"{name} spills: {r}"
            assert r["tensor_cores"] == [], r
    assert doc["target"] == "cuda sm_90" and doc["triton"]


def test_a_kernel_that_does_not_compile_fails(tmp_path):
    (tmp_path / "broken_specs.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def good(x_ptr, BLOCK: tl.constexpr):
            tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)

        @triton.jit
        def bad(x_ptr, BLOCK: tl.constexpr):
            tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)  # BLOCK=3: arange needs a power of 2

        SM90_COMPILE_SPECS = [
            {"name": "good[fp32]", "fn": good, "signature": {"x_ptr": "*fp32", "BLOCK": "constexpr"},
             "constexprs": {"BLOCK": 64}, "num_warps": 1, "num_stages": 1},
            {"name": "bad[fp32]", "fn": bad, "signature": {"x_ptr": "*fp32", "BLOCK": "constexpr"},
             "constexprs": {"BLOCK": 3}, "num_warps": 1, "num_stages": 1},
        ]
    '''))
    proc = _run(["--module", "broken_specs", "--jobs", "1"], interpret="0", extra_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1/2 specs compiled" in proc.stdout
    assert "FAILED broken_specs: bad[fp32]" in proc.stderr


def test_select_and_occupancy():
    specs = [(m, i, s) for i, (m, s) in enumerate(_all_specs())]
    assert _select(specs, ["no such kernel"], sample=False) == []
    pools = _select(specs, ["max_pool2d_fwd"], sample=False)
    assert pools and all("max_pool2d_fwd" in s[2]["name"] for s in pools)
    sampled = _select(specs, [], sample=True)
    assert len({s[2]["fn"] for s in sampled}) == len(sampled)
    # Hopper SM: 64K registers, 64 warps, 228 KB shared memory.
    assert _occupancy(regs=32, smem=0, num_warps=4) == 16  # warp-limited: 64 warps / 4
    assert _occupancy(regs=255, smem=0, num_warps=8) == 1  # 256 regs * 32 lanes * 8 warps = 64K
    assert _occupancy(regs=64, smem=100 * 1024, num_warps=4) == 2  # shared-memory-limited


def test_default_modules_are_the_ops_and_the_lessons():
    """The ops' specs are tooling, all in codegen_specs (none left in an op file); the lessons keep their own list;
    those two are the default modules."""
    from triton_kernels import conv, lrn, pool

    assert codegen.DEFAULT_MODULES == ("triton_kernels.codegen_specs", "triton_kernels.lessons.specs")
    for op_file in (conv, pool, lrn):
        assert not hasattr(op_file, "SM90_COMPILE_SPECS"), op_file.__name__
    from triton_kernels import codegen_specs

    assert codegen_specs.SM90_COMPILE_SPECS == (codegen_specs.CONV_SPECS + codegen_specs.POOL_SPECS
                                                + codegen_specs.LRN_SPECS)
    kernels = {s["fn"].__name__ for s in codegen_specs.SM90_COMPILE_SPECS}
    assert {"_lrn_fwd_kernel", "_lrn_bwd_kernel", "_max_pool2d_fwd_kernel", "_conv2d_fwd_kernel"} <= kernels


def test_codegen_does_not_shadow_the_standard_library():
    """Renamed from triton_kernels/inspect.py, whose name hid the stdlib's `inspect` from scripts run inside the
    package folder."""
    assert not (REPO / "triton_kernels" / "inspect.py").exists()
    proc = subprocess.run([sys.executable, "-c", "import inspect; print(inspect.__file__)"], capture_output=True,
                          text=True, cwd=REPO / "triton_kernels", timeout=600)
    assert proc.returncode == 0 and "triton_kernels" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("flag", ["--jobs", "--filter"])
def test_bad_flags_exit_nonzero(flag):
    from triton_kernels.codegen import main

    if flag == "--jobs":
        with pytest.raises(SystemExit, match="--jobs must be >= 1"):
            main(["--jobs", "0"])
    else:
        with pytest.raises(SystemExit):
            main(["--filter"])  # argparse: the flag needs a value


# ------------------------------------------------------------------------------------------------------------
# scripts/gpu_check.sh: it cannot run here (no GPU); its dry run, its flags and its bookkeeping can.
# ------------------------------------------------------------------------------------------------------------

GPU_CHECK = REPO / "scripts" / "gpu_check.sh"
STEP_NAMES = ["info", "codegen", "gpu_tests", "bench_layers", "bench_train", "seed_run"]
DATA_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _data_dir(tmp_path: Path, names=DATA_FILES) -> Path:
    """A folder holding (empty stand-ins for) the Fashion-MNIST files: the script only checks they are there."""
    d = tmp_path / "fmnist"
    d.mkdir(exist_ok=True)
    for name in names:
        (d / f"{name}.gz").write_bytes(b"")
    return d


def _gpu_check(args, env_extra=None, timeout=600):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _dry_run_steps(out_dir: Path, env_extra=None) -> dict[str, str]:
    proc = _gpu_check(["--dry-run", str(out_dir)], env_extra)
    assert proc.returncode == 0, proc.stderr
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("step "):
            name, rest = line[5:].split(" ", 1)
            steps[name] = rest.split(": ", 1)[1].rsplit(" > ", 1)[0]
    assert not out_dir.exists(), "a dry run must not create OUTDIR"
    return steps


def test_gpu_check_dry_run_lists_every_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASHION_MNIST_DIR"}
    proc = subprocess.run(["bash", str(GPU_CHECK), "--dry-run", str(tmp_path / "o")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert f"FASHION_MNIST_DIR={REPO}/data/fashion-mnist" in proc.stdout  # the checkout's git-ignored copy
    steps = _dry_run_steps(tmp_path / "o", {"FASHION_MNIST_DIR": "/some/where"})
    assert list(steps) == STEP_NAMES
    out = tmp_path / "o"
    assert f"-m triton_kernels.codegen --jobs" in steps["codegen"] and f"{out}/results/codegen_sm90.json" in steps[
        "codegen"]
    assert "-m pytest -m gpu" in steps["gpu_tests"] and steps["gpu_tests"].rstrip().endswith("tests/")
    assert "--backend triton --amp bf16 --preset full --epochs 10" in steps["seed_run"]
    assert f"--out '{out}/seed_run'" in steps["seed_run"]
    proc = _gpu_check(["--dry-run", str(out)], {"FASHION_MNIST_DIR": "/some/where"})
    assert "FASHION_MNIST_DIR=/some/where" in proc.stdout
    assert "data: missing train-images-idx3-ubyte" in proc.stdout  # said, but a dry run goes on
    proc = _gpu_check(["--dry-run", str(out)], {"FASHION_MNIST_DIR": str(_data_dir(tmp_path))})
    assert proc.returncode == 0 and "data: the four files are there" in proc.stdout


def test_gpu_check_commands_parse_with_the_cli(tmp_path):
    """The flags the script passes exist in the `alexnet` subcommands (a renamed flag fails here, not on the GPU)."""
    import shlex

    from torch_model.cli import build_parser

    steps = _dry_run_steps(tmp_path / "o")
    for name in ("bench_layers", "bench_train", "seed_run"):
        argv = shlex.split(steps[name])
        argv = argv[argv.index("torch_model") + 1:]
        args = build_parser(argv[0]).parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag
        assert args is not None, name


def test_gpu_check_usage_and_no_gpu(tmp_path):
    assert _gpu_check([]).returncode == 2
    assert _gpu_check(["a", "b"]).returncode == 2
    if CUDA:
        pytest.skip("this machine has a GPU: the refusal cannot be shown")
    proc = _gpu_check([str(tmp_path / "o")], {"PYTHON": sys.executable, "FASHION_MNIST_DIR": str(_data_dir(tmp_path))})
    assert proc.returncode == 2 and "no CUDA GPU here" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_gpu_check_bookkeeping_with_fake_tools(tmp_path):
    """With a fake nvidia-smi and a fake python: a failed step, a timed-out step and the steps skipped when the
    budget is spent are all reported, the script goes on past failures and exits 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'fake GPU'\n")
    (bin_dir / "fakepy").write_text(textwrap.dedent("""\
        #!/bin/bash
        case "$*" in
            *"-m pytest"*) echo "2 passed, 1 failed in 0.1s"; exit 1 ;;
            *"bench layers"*) exec sleep 60 ;;
            *) echo "fake python: $*"; exit 0 ;;
        esac
    """))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "o"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(bin_dir / "fakepy"),
           "GPU_CHECK_BUDGET_S": "12", "FASHION_MNIST_DIR": str(_data_dir(tmp_path))}
    proc = _gpu_check([str(out)], env, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text()
    status = {line.split()[0]: line.split()[1] for line in summary.splitlines()[2:] if line.split()
              and line.split()[0] in STEP_NAMES}
    assert status == {"info": "ok", "codegen": "ok", "gpu_tests": "FAILED(rc=1)", "bench_layers": "TIMEOUT",
                      "bench_train": "SKIPPED(no", "seed_run": "SKIPPED(no"}, summary
    assert "gpu tests: 2 passed, 1 failed" in summary
    assert "fake GPU" in (out / "info.log").read_text()
    assert "triton_kernels.codegen" in (out / "codegen.log").read_text()
    doc = json.loads((out / "results" / "gpu_check.json").read_text())
    assert doc["steps"]["gpu_tests"] == {"status": "FAILED(rc=1)", "seconds": doc["steps"]["gpu_tests"]["seconds"]}
    assert doc["seed_run"]["status"] == "SKIPPED(no time left)" and doc["seed_run"]["test_acc"] is None


def test_gpu_check_stops_at_once_without_the_data(tmp_path):
    """The four Fashion-MNIST files are checked before anything else (the GPU machine has none of its own):
    one line naming the folder and the missing files, exit 2, nothing created, no step started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'fake GPU'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    data = _data_dir(tmp_path, DATA_FILES[:3])  # the test labels are missing
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": "/bin/false", "FASHION_MNIST_DIR": str(data)}
    proc = _gpu_check([str(tmp_path / "o")], env, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and f"FASHION_MNIST_DIR={data} lacks t10k-labels-idx1-ubyte" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "o").exists()


def test_gpu_check_records_the_seed_run(tmp_path):
    """Every step passing (fake tools), the seed run's wall time, training time and test accuracy from its
    metrics.csv land in summary.txt and in results/gpu_check.json's `seed_run`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'fake GPU'\n")
    (bin_dir / "fakepy").write_text(textwrap.dedent("""\
        #!/bin/bash
        case "$*" in
            *"torch_model train"*)
                out=$(echo "$*" | sed -E "s/.*--out ([^ ]+).*/\\1/")
                mkdir -p "$out"
                printf 'epoch,loss,train_acc,test_acc,examples_per_sec,examples,train_seconds\\n' > "$out/metrics.csv"
                printf '1,0.9,0.70,0.801,9000,60000,6.5\\n2,0.5,0.85,0.8876,9100,60000,6.25\\n' >> "$out/metrics.csv"
                echo "trained" ;;
            *) echo "fake python: $*"; exit 0 ;;
        esac
    """))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "o"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(bin_dir / "fakepy"),
           "FASHION_MNIST_DIR": str(_data_dir(tmp_path))}
    proc = _gpu_check([str(out)], env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "results" / "gpu_check.json").read_text())
    assert set(doc["steps"]) == set(STEP_NAMES) and all(s["status"] == "ok" for s in doc["steps"].values())
    seed = doc["seed_run"]
    assert (seed["epochs"], seed["test_acc"], seed["train_s"], seed["status"]) == (2, 0.8876, 12.8, "ok"), seed
    assert seed["wall_s"] == doc["steps"]["seed_run"]["seconds"] >= 0 and seed["amp"] == "bf16"
    summary = (out / "summary.txt").read_text()
    assert "seed run (triton, bf16 autocast, --preset full): 2 epoch(s)" in summary
    assert "test accuracy 0.8876" in summary and "(training 12.8 s)" in summary

