"""The `alexnet` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing
    configure(parser: argparse.ArgumentParser) -> None   # add its flags
    run(args: argparse.Namespace) -> int                 # do the work, return the exit status
and is imported only when it is asked for, so `alexnet summary` never pays for Triton.

Errors a user can cause (bad flags, missing or corrupt data, bad shapes) arrive here as ValueError /
OSError and are printed as one line `alexnet <command>: error: ...` with exit status 2 — no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("torch_model.train", "train AlexNet on Fashion-MNIST (torch, triton or numpy backend)"),
    "summary": ("torch_model.summary", "each layer's output shape, parameters and FLOPs for one 224x224 image"),
    "gradcheck": ("numpy_ref.gradcheck", "finite-difference check of every NumPy op and parameter"),
    "bench": ("torch_model.bench", "benchmarks: cpu, numpy, layers, train, lessons, loader (`alexnet bench --help`)"),
    "evaluate": ("torch_model.evaluate", "a checkpoint's test accuracy, per-class table, confusion matrix, mistakes"),
    "visualize": ("torch_model.visualize", "conv1 filters, feature maps, saliency and class probabilities"),
    "export": ("torch_model.export", "a checkpoint's weights as an .npz that numpy_ref loads"),
    "explain": ("torch_model.explain", "a web page taking AlexNet apart on real images (static; --serve to draw your own)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="d2l's AlexNet on Fashion-MNIST, three ways: NumPy, Triton, PyTorch.",
        epilog=f"commands:\n{lines}\n\n`alexnet COMMAND --help` shows a command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"alexnet {command}", description=help_)
    module.configure(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top = _top_parser().parse_args(argv[:1] or ["--help"])
    parser = build_parser(top.command)
    args = parser.parse_args(argv[1:])
    from torch_model.device import keep_freed_memory

    keep_freed_memory()   # before the first big tensor: every step then reuses the process's own pages
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError
        print(f"alexnet {top.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet {top.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
