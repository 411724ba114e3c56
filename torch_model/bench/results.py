"""The results file `<out-dir>/<date>-<machine>.json`: its schema (validate_results), reading, merging one run
into it (an entry measured again replaces the old one) and the atomic write."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

from torch_model.files import atomic_write

DEFAULT_OUT_DIR = Path("docs/benchmarks/results")
DTYPES = ("bf16", "tf32", "fp32")        # fp32 = strict fp32 (TF32 off); on a CPU the only one there is
PASSES = ("fwd", "fwd+bwd")
# relative error (||out - ref|| / ||ref|| against float64) above which a figure is flagged as wrong, per dtype
REL_ERR_TOL = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 5e-2}


# the layers of `bench layers`, in the order tables and charts show them: d2l's AlexNet (the seed's), then the
# paper variant's two local response normalizations (d2l's model has none)
LAYER_ORDER = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3", "lrn1", "lrn2")
LAYER_KEY = ("layer", "dtype", "pass", "impl", "layout", "batch")
TRAIN_KEY = ("backend", "dtype", "layout", "batch")
SEED_KEY = ("backend", "dtype", "epochs", "batch", "limit_train", "limit_test")
LESSON_KEY = ("layer", "step", "dtype", "pass", "layout", "batch")
SECTION_KEYS = {"layers": LAYER_KEY, "train": TRAIN_KEY, "seed_run": SEED_KEY, "lessons": LESSON_KEY}
REQUIRED = {
    "layers": {"layer": str, "dtype": str, "pass": str, "impl": str, "layout": str, "batch": int, "ms": float,
               "tflops": (float, type(None))},
    "train": {"backend": str, "dtype": str, "batch": int, "img_per_s": float},
    "seed_run": {"backend": str, "dtype": str, "epochs": int, "seconds": float, "test_acc": float},
    "lessons": {"layer": str, "step": str, "dtype": str, "pass": str, "layout": str, "batch": int, "ms": float},
}
GPU_IMPLS = ("triton", "cudnn", "compile")
CPU_IMPLS = ("triton", "torch-cpu")


def results_path(out_dir: str | os.PathLike, machine: str, date: str) -> Path:
    return Path(out_dir) / f"{date}-{machine}.json"


def validate_results(data: object, where: str = "results") -> dict:
    """Raise ValueError listing everything that does not match the issue's schema; return the data."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key, typ in (("machine", str), ("date", str), ("torch", str), ("cpu", bool)):
        if not isinstance(data.get(key), typ):
            problems.append(f"{key!r} missing or not a {typ.__name__}")
    if not (data.get("triton") is None or isinstance(data.get("triton"), str)):
        problems.append("'triton' must be a version string or null")
    peak = data.get("peak")
    cpu = data.get("cpu") is True
    if not isinstance(peak, dict):
        problems.append("'peak' missing or not an object")
    else:
        for key in ("bf16_matmul_tflops", "copy_tb_per_s"):
            value = peak.get(key, "missing")
            ok = isinstance(value, (int, float)) and value > 0 or (cpu and key == "bf16_matmul_tflops" and value is None)
            if not ok:
                problems.append(f"peak.{key} = {value!r} (a positive number{'; null allowed on a CPU' if cpu else ''})")
    impls = CPU_IMPLS + ("compile",) if cpu else GPU_IMPLS
    for section, fields in REQUIRED.items():
        entries = data.get(section, [])
        if not isinstance(entries, list):
            problems.append(f"{section!r} must be a list")
            continue
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                problems.append(f"{section}[{i}] is not an object")
                continue
            for name, typ in fields.items():
                value = e.get(name, "<missing>")
                types = typ if isinstance(typ, tuple) else (typ,)
                if float in types and isinstance(value, int) and not isinstance(value, bool):
                    continue
                if not isinstance(value, types) or isinstance(value, bool):
                    problems.append(f"{section}[{i}].{name} = {value!r}")
            if section == "layers":
                if e.get("pass") not in PASSES:
                    problems.append(f"layers[{i}].pass = {e.get('pass')!r}, not one of {PASSES}")
                if e.get("impl") not in impls:
                    problems.append(f"layers[{i}].impl = {e.get('impl')!r}, not one of {impls}")
            if e.get("dtype") not in DTYPES:
                problems.append(f"{section}[{i}].dtype = {e.get('dtype')!r}, not one of {DTYPES}")
    if problems:
        raise ValueError(f"{where} does not match the results schema: " + "; ".join(problems[:12])
                         + (f" (+{len(problems) - 12} more)" if len(problems) > 12 else ""))
    return data


def load_results(path: str | os.PathLike) -> dict | None:
    """The results file at path, validated; None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); move it away or pass another --out-dir") from exc
    return validate_results(data, str(path))


def _key(entry: dict, key: Sequence[str]) -> tuple:
    return tuple(entry.get(k) for k in key)


def merge_results(old: dict | None, new: dict) -> dict:
    """`new` (one run: metadata plus some of layers/train/seed_run) folded into `old` (the file so far).
    An entry of `new` replaces the old entry with the same key (layer, dtype, pass, impl, layout, batch for layers;
    backend, dtype, batch for train; ...); all other old entries stay. Top-level metadata and the peak become the
    new run's; each entry keeps the peak_fraction of its own run, and runs[section] records each run."""
    if old is not None and old.get("cpu") != new.get("cpu"):
        raise ValueError("refusing to merge CPU and GPU results into one file")
    merged = dict(old or {})
    for k, v in new.items():
        if k in SECTION_KEYS or k == "runs":
            continue
        merged[k] = v
    for section, key in SECTION_KEYS.items():
        entries = list(merged.get(section, []))
        if section in new:
            fresh = {_key(e, key) for e in new[section]}
            entries = [e for e in entries if _key(e, key) not in fresh] + list(new[section])
        merged[section] = entries
    runs = dict(merged.get("runs", {}))
    runs.update(new.get("runs", {}))
    merged["runs"] = runs
    return merged


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb") -> None:
    """Write through a temporary file in the same folder, then os.replace: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, mode=mode)


def write_json(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=False, default=str) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text), mode="w")


def save_run(out_dir: str | os.PathLike, run: dict) -> tuple[Path, dict]:
    """Merge one run into <out_dir>/<date>-<machine>.json (atomic) and return (path, merged file)."""
    validate_results({**run, **{s: run.get(s, []) for s in SECTION_KEYS}}, "this run")
    path = results_path(out_dir, run["machine"], run["date"])
    merged = validate_results(merge_results(load_results(path), run), str(path))
    write_json(path, merged)
    return path, merged


def clean_json(value):
    """NaN/inf -> None, so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value
