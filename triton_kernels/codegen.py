"""Compile every kernel configuration the H200 would run, for sm_90, on any machine (no GPU needed), and report
its resources: registers per thread, stack and spill traffic, shared memory, tensor-core instructions.

    python -m triton_kernels.codegen                    # every spec, a table per kernel
    python -m triton_kernels.codegen --sample           # one spec per kernel (bf16 if it has one): the CI subset
    python -m triton_kernels.codegen --filter pool --json out.json --jobs 4
    python -m triton_kernels.codegen --list             # names only, nothing compiled

The specs come from modules that list them in SM90_COMPILE_SPECS (the format: triton_kernels/codegen_specs.py's
docstring): by default triton_kernels.codegen_specs (conv.py's, pool.py's and lrn.py's kernels) and
triton_kernels.lessons.specs (the lesson steps'); --module picks others. The compiler is Triton's own, with the
ptxas and cuobjdump its wheel carries (triton/backends/nvidia/bin/); pointer arguments are compiled as 16-byte
aligned, as torch allocates them.
Exits 1 when any spec fails, 2 when no spec matches.

On a machine without CUDA `import triton_kernels` turns the interpreter on, and interpreted kernels cannot be
compiled: main() then runs itself again in a fresh `python -m triton_kernels.codegen` with TRITON_INTERPRET=0.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

DEFAULT_MODULES = ("triton_kernels.codegen_specs", "triton_kernels.lessons.specs")  # the ops', the lessons'
TARGET_ARCH = 90  # sm_90: H100 / H200
# Hopper, per SM: 64K 32-bit registers (allocated per warp in 256-register chunks), 64 warps, 32 CTAs,
# 228 KB shared memory of which 1 KB is reserved per CTA. Used for the "CTAs/SM" estimate only.
_SM_REGS, _SM_WARPS, _SM_CTAS, _SM_SMEM, _CTA_SMEM_RESERVED = 65536, 64, 32, 228 * 1024, 1024
_TENSOR_CORE_SASS = ("HGMMA", "HMMA", "DMMA")  # warpgroup MMA (Hopper wgmma), warp MMA (mma.sync), fp64 MMA
_TENSOR_CORE_PTX = ("wgmma.mma_async", "mma.sync")


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _load_specs(modules: list[str]) -> list[tuple[str, int, dict]]:
    """(module, index, spec) for every spec of every module."""
    out = []
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        specs = getattr(mod, "SM90_COMPILE_SPECS", None)
        if specs is None:
            raise SystemExit(f"codegen: {mod_name} has no SM90_COMPILE_SPECS")
        out.extend((mod_name, i, spec) for i, spec in enumerate(specs))
    return out


def _dtype_of(spec: dict) -> str:
    """The first pointer's element type: the dtype a spec is compiled for."""
    for ty in spec["signature"].values():
        if isinstance(ty, str) and ty.startswith("*"):
            return ty[1:]
    return "-"


def _occupancy(regs: int, smem: int, num_warps: int) -> int:
    """CTAs that fit on one SM at once, by warps, registers and shared memory."""
    regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = _SM_REGS // (regs_per_warp * num_warps)
    by_smem = _SM_SMEM // (smem + _CTA_SMEM_RESERVED) if smem else _SM_CTAS
    return max(0, min(_SM_CTAS, _SM_WARPS // num_warps, by_regs, by_smem))


def _kernel_name(fn) -> str:
    """module.name of a spec's @triton.jit function (the module that defines the kernel, not the spec list)."""
    inner = getattr(fn, "fn", fn)
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__name__', str(fn))}"


def refusal(spec: dict) -> str | None:
    """Why a spec's tile configuration cannot compile as intended, said before compiling (None: nothing to say).
    The rules a changed BLOCK_* runs into first: every block is a power of two (tl.arange and the register layouts
    need one), and a kernel meant for the tensor cores needs tl.dot tiles of at least 16 along M, N and K (the
    smallest bf16/fp16 MMA shape is m16n8k16: K = 16)."""
    blocks = {k: v for k, v in spec.get("constexprs", {}).items() if k.startswith("BLOCK") and isinstance(v, int)}
    for name, value in blocks.items():
        if value < 1 or value & (value - 1):
            return f"{name} = {value} is not a power of two: tl.arange(0, {name}) and Triton's layouts need one"
    if spec.get("expect_tensor_cores"):
        small = {k: v for k, v in blocks.items() if k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") and v < 16}
        if small:
            which = ", ".join(f"{k} = {v}" for k, v in small.items())
            return (f"{which} < 16: a tl.dot runs on the tensor cores only with tiles of at least 16 along M, N and "
                    f"K (the smallest bf16 MMA is m16n8k16); make it 16 or more")
    return None


def _compile_one(job: tuple[str, int]) -> dict:
    """Compile spec `index` of module `mod_name` for sm_90 and measure it. Never raises: errors go in the dict."""
    mod_name, index = job
    spec = importlib.import_module(mod_name).SM90_COMPILE_SPECS[index]
    row = {
        "module": mod_name, "name": spec["name"], "kernel": getattr(spec["fn"], "__name__", str(spec["fn"])),
        "kernel_path": _kernel_name(spec["fn"]),
        "dtype": _dtype_of(spec), "num_warps": spec["num_warps"], "num_stages": spec["num_stages"], "ok": False,
    }
    t0 = time.perf_counter()
    reason = refusal(spec)
    if reason is not None:
        row["compile_s"] = 0.0
        row["error"] = f"refused: {reason}"
        return row
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        fn = spec["fn"]
        if not hasattr(fn, "arg_names"):
            raise TypeError(f"spec fn must be a @triton.jit function compiled without the interpreter, got {fn!r}")
        names = list(spec["signature"])
        attrs = {(names.index(k),): [["tt.divisibility", 16]]
                 for k, ty in spec["signature"].items() if isinstance(ty, str) and ty.startswith("*")}
        attrs.update(spec.get("attrs", {}))
        src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec["constexprs"], attrs=attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", TARGET_ARCH, 32),
                                options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        ptx = kernel.asm["ptx"]
        with tempfile.TemporaryDirectory() as tmp:
            cubin = os.path.join(tmp, "k.cubin")
            with open(cubin, "wb") as f:
                f.write(kernel.asm["cubin"])
            res = subprocess.run([_tool("cuobjdump"), "-res-usage", cubin], capture_output=True, text=True,
                                 check=True).stdout
            sass = subprocess.run([_tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                                  check=True).stdout
        usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
        row["registers"] = int(usage.get("REG", 0))
        row["stack_bytes"] = int(usage.get("STACK", 0))
        row["local_bytes"] = int(usage.get("LOCAL", 0))
        row["spill_stores"] = len(re.findall(r"\bSTL(?:\.\w+)*\b", sass))  # stores to local memory: spills
        row["spill_loads"] = len(re.findall(r"\bLDL(?:\.\w+)*\b", sass))
        row["shared_bytes"] = int(kernel.metadata.shared) + int(usage.get("SHARED", 0))
        row["tensor_cores"] = sorted({m for m in _TENSOR_CORE_SASS if re.search(rf"\b{m}\b", sass)}
                                     | {m.split(".")[0] for m in _TENSOR_CORE_PTX if m in ptx})
        row["ctas_per_sm"] = _occupancy(row["registers"], row["shared_bytes"], spec["num_warps"])
        row["ok"] = True
        if spec.get("expect_tensor_cores") and not row["tensor_cores"]:
            row["ok"] = False
            row["error"] = ("expected tensor-core instructions (wgmma/mma), found none (a tl.dot whose operands are "
                            "fp32 with input_precision='ieee', or tiles under 16, runs on the FP32 pipes)")
    except Exception as exc:  # a failed compile is a result to report, not a crash
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return row


def _select(specs, filters: list[str], sample: bool):
    chosen = [s for s in specs if not filters or any(f in s[2]["name"] for f in filters)]
    if sample:  # one spec per kernel: its first bf16 one (the tensor-core path), else its first
        by_kernel: dict[tuple[str, str], tuple] = {}
        for s in chosen:
            key = (s[0], getattr(s[2]["fn"], "__name__", ""))
            if key not in by_kernel or (_dtype_of(by_kernel[key][2]) != "bf16" and _dtype_of(s[2]) == "bf16"):
                by_kernel[key] = s
        chosen = list(by_kernel.values())
    return chosen


def _print_tables(rows: list[dict]) -> None:
    header = f"{'config':<52} {'warps':>5} {'stg':>3} {'regs':>4} {'stack':>5} {'spill st/ld':>11} " \
             f"{'smem B':>7} {'tensor cores':>12} {'CTAs/SM':>7} {'compile s':>9}"
    kernels: dict[str, list[dict]] = {}
    for r in rows:
        kernels.setdefault(r["kernel_path"], []).append(r)
    for kernel, krows in kernels.items():
        print(f"\n{kernel}  (sm_{TARGET_ARCH})")
        print(header)
        for r in krows:
            if "registers" not in r:
                print(f"{r['name']:<52} FAILED  {r.get('error', '')}")
                continue
            tc = "+".join(r["tensor_cores"]) or "-"
            spill = f"{r['spill_stores']}/{r['spill_loads']}"
            line = f"{r['name']:<52} {r['num_warps']:>5} {r['num_stages']:>3} {r['registers']:>4} " \
                   f"{r['stack_bytes']:>5} {spill:>11} {r['shared_bytes']:>7} {tc:>12} {r['ctas_per_sm']:>7} " \
                   f"{r['compile_s']:>9.2f}"
            print(line + ("" if r["ok"] else f"  FAILED {r['error']}"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m triton_kernels.codegen", description=__doc__.split("\n\n")[0])
    p.add_argument("--filter", action="append", default=[], metavar="NAME",
                   help="keep specs whose name contains NAME (repeatable: any of them)")
    p.add_argument("--sample", action="store_true", help="one spec per kernel, its first bf16 one if any (the CI subset)")
    p.add_argument("--module", action="append", default=None, metavar="MOD",
                   help=f"module(s) holding SM90_COMPILE_SPECS (default: {', '.join(DEFAULT_MODULES)})")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile in this many processes")
    p.add_argument("--list", action="store_true", help="print the spec names and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"codegen: --jobs must be >= 1, got {args.jobs}")
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or "triton_kernels.conv" in sys.modules and _interpreted():
        # The kernels in this process were defined for the interpreter: start over where they are not.
        env = dict(os.environ, TRITON_INTERPRET="0")
        return subprocess.run([sys.executable, "-m", "triton_kernels.codegen", *argv], env=env).returncode

    # triton 3.9 warns once per process that its FP-fusion default will change; the GPU's triton fuses too.
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    import triton

    specs = _select(_load_specs(args.module or list(DEFAULT_MODULES)), args.filter, args.sample)
    if args.list:
        for mod_name, _, spec in specs:
            print(f"{mod_name}: {spec['name']}")
        return 0 if specs else 2
    if not specs:
        print(f"codegen: no spec matches --filter {args.filter}", file=sys.stderr)
        return 2
    jobs = [(m, i) for m, i, _ in specs]
    t0 = time.perf_counter()
    if args.jobs == 1 or len(jobs) == 1:
        rows = [_compile_one(j) for j in jobs]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs)), mp_context=ctx) as pool:
            rows = list(pool.map(_compile_one, jobs))
    wall = time.perf_counter() - t0
    _print_tables(rows)
    failed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} specs compiled for sm_{TARGET_ARCH} in {wall:.1f} s "
          f"(triton {triton.__version__}, {args.jobs} jobs)")
    for r in failed:
        print(f"FAILED {r['module']}: {r['name']}: {r.get('error', '')}", file=sys.stderr)
    if args.json:
        import torch

        doc = {"target": f"cuda sm_{TARGET_ARCH}", "triton": triton.__version__, "torch": torch.__version__,
               "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "wall_s": round(wall, 2), "results": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 1 if failed else 0


def _interpreted() -> bool:
    """True when the imported kernel modules were defined under the interpreter."""
    import triton_kernels

    return bool(getattr(triton_kernels, "INTERPRET", False))


if __name__ == "__main__":
    sys.exit(main())
