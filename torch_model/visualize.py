"""`alexnet visualize`: what a trained AlexNet learned, seen through numpy_ref on the checkpoint's weights.

    alexnet visualize --checkpoint runs/R/best.pt              # test image 0
    alexnet visualize --checkpoint runs/R/best.pt --index 42 --out pictures/

Writes into --out (default: the checkpoint's folder):
    filters.png       conv1's 96 learned 11x11 filters as a grid; beside them the same filters at initialisation
                      (rebuilt from the run's seed) and what training added (trained - initial)
    feature_maps.png  test image I after each conv/pool block (pool1, pool2, conv3, conv4, pool5): its most active
                      channels, largest mean activation first
    saliency.png      |d score of the predicted class / d input| for test images I..I+5, over the images: on the
                      224x224 input the network sees, and carried back through the resize to the 28x28 pixels
and prints the class probabilities of image I (numpy_ref's, and torch's as a check).

The saliency is numpy_ref's own backward: the forward in float64 keeps every layer's cache, then
`net.backward(dout)` with dout = one-hot of the predicted class on the logits runs the chain rule back to the
input, layer by layer (the walkthrough's backward with another starting gradient). A test holds it equal to
torch autograd's in float64.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from torch_model.checkpoint import Checkpoint, load
from torch_model.data import CLASS_NAMES, find_data_dir, load_split, model_input as fed_to_model
from torch_model.evaluate import output_dir
from torch_model.plots import plot_feature_maps, plot_filters, plot_saliency

SALIENCY_IMAGES = 6


# ----------------------------------------------------------------------------------------------- numpy_ref

def numpy_model(state: dict[str, torch.Tensor], dtype=np.float64, variant: str = "d2l"):
    """numpy_ref.alexnet(variant=...) holding the checkpoint's weights (torch's keys load as they are), eval mode."""
    import numpy_ref

    last = [k for k in state if k.endswith(".weight")][-1]            # the output layer (classes, 4096)
    net = numpy_ref.alexnet(int(state[last].shape[0]), dtype=dtype, init=False, variant=variant)
    net.load_state_dict({k: v.detach().cpu().numpy() for k, v in state.items()})
    return net.eval()


def blocks(net) -> list[tuple[int, str]]:
    """Where feature_maps.png looks: the last layer of each conv block (the conv, its ReLU, an LRN, a pool), up to
    the next conv or the Flatten, as (index in the Sequential, name): d2l's pool1, pool2, conv3, conv4, pool5."""
    kinds = [type(layer).__name__ for layer in net]
    convs = [i for i, k in enumerate(kinds) if k == "Conv2d"]
    flatten = kinds.index("Flatten")
    out = []
    for n, i in enumerate(convs, start=1):
        end = (convs[n] if n < len(convs) else flatten) - 1
        out.append((end, f"pool{n}" if kinds[end] == "MaxPool2d" else f"conv{n}+relu"))
    return out


def saliency(net, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d logits[n, target[n]] / d x, logits, target) with target = the predicted class, by numpy_ref's backward.

    x (N, C, R, R). In eval mode the images do not interact, so one backward of sum_n logits[n, target[n]]
    (dout = one-hot rows) gives every image's own gradient. Parameter gradients are discarded."""
    logits = net.forward(x)                                           # (N, C), every layer keeps its cache
    target = logits.argmax(axis=1)                                    # (N,)
    dout = np.zeros_like(logits)                                      # (N, C)
    dout[np.arange(len(target)), target] = 1.0
    dx = net.backward(dout)                                           # (N, C, R, R)
    net.zero_grad()
    return dx, logits, target


def activations(net, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for x, in order (forward only; the caches are freed)."""
    outs = []
    for layer in net:
        x = layer.forward(x)
        outs.append(x)
    net.clear_cache()
    return outs


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------- pictures

def to_pixels(grad: np.ndarray, size: int = 28) -> np.ndarray:
    """The gradient w.r.t. the network's input (N, 1, R, R) carried back through the 28 -> R bilinear resize to the
    image's own pixels (N, size, size): the resize is x = A img B^T (numpy_ref.walkthrough.bilinear_matrix), so
    d/d img = A^T G B."""
    from numpy_ref.walkthrough import bilinear_matrix

    A = bilinear_matrix(size, grad.shape[-2])                         # (R, size)
    B = bilinear_matrix(size, grad.shape[-1])                         # (R, size)
    return A.T @ grad[:, 0] @ B                                       # (N, size, size)


# ----------------------------------------------------------------------------------------------- the command

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="best.pt / last.pt of a run")
    parser.add_argument("--index", type=int, default=0, metavar="I",
                        help="test image for the feature maps and probabilities; saliency shows I..I+5 (default 0)")
    parser.add_argument("--out", metavar="DIR", help="where the pictures go (default: the checkpoint's folder)")
    parser.add_argument("--data-dir", help="folder with the four IDX files (.gz or raw); or FASHION_MNIST_DIR")


def check_index(index: int, n: int) -> None:
    if not 0 <= index < n:
        raise ValueError(f"--index {index}: the test set has {n} images, so --index must be in 0..{n - 1}")


def probabilities_table(probs: np.ndarray, label: int) -> str:
    lines = []
    for c in np.argsort(-probs, kind="stable"):
        mark = "  <- true class" if c == label else ""
        lines.append(f"  {CLASS_NAMES[c]:<11} {probs[c]:7.2%} {'#' * int(round(probs[c] * 40))}{mark}")
    return "\n".join(lines)


def model_input(images: torch.Tensor, ckpt: Checkpoint) -> np.ndarray:
    """uint8 (N, 28, 28) -> float64 (N, C, R, R) as the run fed its model (the grey image repeated to C channels;
    raw 0..255 pixels minus the mean training image for a --pixels mean-subtracted run)."""
    return fed_to_model(images, ckpt.resize, ckpt.channels, ckpt.pixel_mean).double().numpy()   # (N, C, R, R)


def visualize(ckpt: Checkpoint, test_images: torch.Tensor, test_labels: torch.Tensor, index: int, out: Path) -> dict:
    """Write the three pictures and return what was printed about image `index` (for tests)."""
    from torch_model.model import alexnet

    check_index(index, len(test_labels))
    out.mkdir(parents=True, exist_ok=True)
    net = numpy_model(ckpt.state, variant=ckpt.variant)               # float64
    written = [plot_filters(ckpt.state["0.weight"].numpy(), out / "filters.png", seed=ckpt.seed,
                            variant=ckpt.variant)]

    x_one = model_input(test_images[index:index + 1], ckpt)          # (1, C, R, R)
    outs = activations(net, x_one)
    probs = softmax(outs[-1][0])                                      # (classes,)
    label = int(test_labels[index])
    pred = int(probs.argmax())
    written.append(plot_feature_maps(test_images[index].numpy(), outs, blocks(net), out / "feature_maps.png",
                                     f"test image #{index} ({CLASS_NAMES[label]}, predicted {CLASS_NAMES[pred]} "
                                     f"{probs[pred]:.0%}): its most active channels after each block"))

    indices = list(range(index, min(index + SALIENCY_IMAGES, len(test_labels))))
    x = model_input(test_images[indices], ckpt)                       # (n, C, R, R)
    grads, logits, target = saliency(net, x)
    grey = grads.sum(axis=1, keepdims=True)                           # (n, 1, R, R): d/d the grey image (C copies)
    written.append(plot_saliency(x[:, :1], test_images[indices].numpy(), grey, to_pixels(grey),
                                 [int(test_labels[i]) for i in indices], target, softmax(logits), indices,
                                 out / "saliency.png"))

    ref = alexnet(len(CLASS_NAMES), init=False, variant=ckpt.variant).eval()   # the torch model, float32
    ref.load_state_dict(ckpt.state)
    with torch.no_grad():
        torch_probs = torch.softmax(ref(torch.from_numpy(x_one).float()), dim=1)[0].double().numpy()
    return dict(probs=probs, label=label, pred=pred, torch_probs=torch_probs, written=written)


def run(args: argparse.Namespace) -> int:
    test = load_split(find_data_dir(args.data_dir), "test")
    check_index(args.index, len(test))
    ckpt = load(args.checkpoint)
    out = output_dir(args.out, ckpt.path)
    note = ckpt.assumption_note()
    if note:
        print(note, flush=True)
    print(f"visualizing {ckpt.describe()}, the {ckpt.variant} AlexNet, through numpy_ref (float64), test image "
          f"#{args.index} ({ckpt.feeding()})", flush=True)
    result = visualize(ckpt, test.images, test.labels, args.index, out)
    print(f"\ntest image #{args.index}: true class {CLASS_NAMES[result['label']]}, predicted "
          f"{CLASS_NAMES[result['pred']]}; class probabilities (numpy_ref):")
    print(probabilities_table(result["probs"], result["label"]))
    diff = np.abs(result["probs"] - result["torch_probs"]).max()
    print(f"torch (float32) on the same weights: predicts {CLASS_NAMES[int(result['torch_probs'].argmax())]}, "
          f"max |probability difference| {diff:.1e}")
    print(f"\nwrote {', '.join(str(p) for p in result['written'])}")
    return 0
