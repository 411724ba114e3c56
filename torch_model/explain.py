"""`alexnet explain`: a static web page that takes d2l's AlexNet apart on real images, every number from numpy_ref.

    alexnet explain --checkpoint runs/R/best.pt --out site/            # build the site
    alexnet explain --untrained --images 3 --out site/                 # d2l's init (labelled so on the page)
    alexnet explain --checkpoint runs/R/best.pt --out site/ --serve    # build, then serve it on 127.0.0.1

The site is plain HTML, ES modules and canvas (torch_model/explain_site/, copied as it is: no build step, nothing
loaded from the network). Its data comes from `trace`, one image through numpy_ref, forward in float32 (the
numbers the page shows and re-adds) and in float64 (the backward of one class score, and a finite-difference
check of one weight per layer):

    SITE/index.html, *.js, style.css     the page (index.html?image=N opens precomputed image N)
    SITE/data/site.json                  the model, the images, layer geometry, the Triton launch configuration,
                                         the confusion matrix of the scanned test images
    SITE/data/weights.bin.gz             conv1..conv5 weights and biases, exact float32 (once per site)
    SITE/data/img-ID.json, .bin.gz       one image: its arrays (index in the .json) and the small numbers

What an image's .bin.gz holds, and why (docs/explainer.md has the sizes): the 28x28 image; the 224x224 input
and the conv outputs as float32 steps (encode_steps, encode_conv: the page resizes the image and sums each layer
in float64, and steps the rounded results to torch's and numpy_ref's float32 values, bit for bit, at ~0.5 byte a
number instead of ~2.3); the pool winners (numpy_ref's argmax, uint8 0..8), so that the ReLU outputs (the conv
outputs where positive) and the pool outputs (the ReLU outputs at the winners), and with them every conv layer's
input, are selections of numpy_ref's float32 numbers; fc6, fc7 and the logits in float32. The backward's
gradients are only drawn: int8, square-root companded (q = round(127 sign(g) sqrt(|g| / scale))). Arrays are
byte-shuffled (byte planes) before gzip, which the browser undoes with DecompressionStream.

With --serve the page can also send a drawn or uploaded 28x28 grey image (POST /api/trace): it is traced as the
test images are and opens as image uID. A bad upload (not an image, not 28x28, over 1 MB) is answered with a
one-line message the page shows.
"""
from __future__ import annotations

import argparse
import gzip
import http.server
import io
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from numpy_ref import functional as Fn
from numpy_ref.geometry import conv_output_size, pool_output_size
from numpy_ref.gradcheck import rel_error
from numpy_ref.layers import Conv2d, Flatten, Linear, MaxPool2d
from numpy_ref.model import layer_names
from torch_model.data import CLASS_NAMES, find_data_dir, load_split, to_input
from torch_model.checkpoint import load
from torch_model.visualize import numpy_model, softmax, to_pixels

PAGE_DIR = Path(__file__).parent / "explain_site"   # the page's files (package data of torch_model)
MAX_UPLOAD_BYTES = 1 << 20                       # a 28x28 PNG is well under 1 KB; refuse anything over 1 MB
DRAIN_BYTES = 64 << 20                           # a refused upload up to this size is read before the answer
FD_STEP = 1e-6                                   # central difference step for the weight check (float64)
BATCH = 50                                       # images per numpy_ref forward while scanning the test set
TOP_TERMS = 8                                    # FC view: terms shown per sum
# The backward's gradients stored per image: with respect to these layers' outputs (and the input x). The page
# derives the others by selection or routing with numpy_ref's own forward: at a conv's or FC's output (before its
# ReLU) the gradient is the ReLU output's where the pre-activation is positive; at relu1/relu2/relu5 it is the
# pool's gradient sent to each window's winner (numpy_ref's argmax). Storing those too would triple the bytes.
STORED_GRADIENTS = ("fc8", "relu7", "relu6", "pool5", "relu4", "relu3", "pool2", "pool1")


# ----------------------------------------------------------------------------------------------- the network

@dataclass
class Model:
    """The weights the page explains, as numpy_ref networks in float32 (the shown forward) and float64 (backward,
    finite differences), and how they were made."""
    state: dict[str, torch.Tensor]
    label: str                     # shown on the page: the checkpoint, or "untrained (d2l's init, seed S)"
    trained: bool
    evaluation: dict | None = None # the run's evaluation.json (alexnet evaluate / train), when beside the checkpoint
    net32: object = field(init=False)
    net64: object = field(init=False)

    def __post_init__(self):
        self.net32 = numpy_model(self.state, dtype=np.float32)
        self.net64 = numpy_model(self.state, dtype=np.float64)


def untrained_state(seed: int) -> dict[str, torch.Tensor]:
    """The weights `alexnet train --seed S` starts from: torch seeded, then d2l's AlexNet with d2l's init."""
    from torch_model.model import alexnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {k: v.detach().clone() for k, v in alexnet(len(CLASS_NAMES)).state_dict().items()}


def load_model(checkpoint: str | None, untrained: bool, seed: int) -> Model:
    if untrained:
        return Model(untrained_state(seed), f"untrained: d2l's init from seed {seed} (the network before "
                                            f"training; expect about 10% for every class)", trained=False)
    ckpt = load(checkpoint)
    if ckpt.variant != "d2l":
        raise ValueError(f"--checkpoint {ckpt.path}: the {ckpt.variant} AlexNet; the explainer takes d2l's")
    if ckpt.resize != 224 or ckpt.pixel_mean is not None:
        raise ValueError(f"--checkpoint {ckpt.path}: trained on other inputs (resize {ckpt.resize}, pixels "
                         f"{ckpt.config.get('pixels', 'unit')}); the explainer takes 224x224 inputs in [0, 1]")
    evaluation = None
    eval_path = ckpt.path.parent / "evaluation.json"
    if eval_path.is_file():
        try:
            evaluation = json.loads(eval_path.read_text())
        except (OSError, ValueError):
            evaluation = None     # a damaged file only costs the run's own matrix on the page
    epoch = f" (epoch {ckpt.epoch})" if ckpt.epoch is not None else ""
    # the run's folder and file, not the whole path: the page names the run, not the machine it was built on
    return Model(ckpt.state, f"trained: {ckpt.path.parent.name}/{ckpt.path.name}{epoch}", trained=True,
                 evaluation=evaluation)


def geometry(net) -> list[dict]:
    """Each layer's kind, name, sizes and (conv, pool) kernel/stride/padding, for the page's index arithmetic."""
    shape, out = (1, 224, 224), []
    for name, layer in zip(layer_names(net), net):
        d = {"name": name, "kind": type(layer).__name__, "in": list(shape)}
        if isinstance(layer, (Conv2d, MaxPool2d)):
            k = layer.kernel_size if isinstance(layer, Conv2d) else (layer.kernel_size,) * 2
            stride = layer.stride if isinstance(layer, Conv2d) else (layer.stride or layer.kernel_size)
            pad = layer.padding
            oh = (conv_output_size if isinstance(layer, Conv2d) else pool_output_size)(shape[1], k[0], stride, pad)
            channels = layer.out_channels if isinstance(layer, Conv2d) else shape[0]
            d.update(kernel=k[0], stride=stride, padding=pad)
            shape = (channels, oh, oh)
        elif isinstance(layer, Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Linear):
            shape = (layer.out_features,)
        d["out"] = list(shape)
        out.append(d)
    return out


def triton_launch() -> dict:
    """The forward conv kernel's launch configuration as triton_kernels.conv defines it: the sm_90 autotune
    candidates (the GPU's autotuner picks one per shape), the small-channel variant's, and the interpreter's."""
    from triton_kernels import conv as tconv

    def cfgs(configs):
        return [{k: c[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")} for c in configs]

    return {"fwd": cfgs(tconv.SM90_FWD_CONFIGS), "fwd_small_c": cfgs(tconv.SM90_FWD_SMALL_C_CONFIGS),
            "interpret": cfgs([tconv.INTERPRET_CONFIG])[0], "small_c_below": tconv.SMALL_C_BELOW,
            "kernel": "triton_kernels/conv.py: _conv2d_fwd_kernel"}


# ----------------------------------------------------------------------------------------------- one image

def shuffled(a: np.ndarray) -> bytes:
    """The array's little-endian bytes as byte planes (all first bytes, then all second bytes, ...): a float
    array's sign/exponent bytes then sit together, which gzip compresses far better."""
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return np.frombuffer(a.tobytes(), np.uint8).reshape(-1, a.itemsize).T.tobytes()


def pack(arrays: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """(gzip of the shuffled arrays one after the other, {name: {dtype, shape, offset}})."""
    index, chunks, offset = {}, [], 0
    for name, a in arrays.items():
        if a.dtype.name not in ("float32", "uint8", "int8"):
            raise ValueError(f"pack: {name} is {a.dtype}; the page reads float32, uint8 and int8")
        blob = shuffled(a)
        index[name] = {"dtype": a.dtype.name, "shape": list(a.shape), "offset": offset}
        chunks.append(blob)
        offset += len(blob)
    return gzip.compress(b"".join(chunks), compresslevel=6, mtime=0), index


def unpack(blob: bytes, index: dict) -> dict[str, np.ndarray]:
    """pack's inverse (what the page's data.js does): {name: array}."""
    raw = gzip.decompress(blob)
    out = {}
    for name, d in index.items():
        dtype = np.dtype(d["dtype"]).newbyteorder("<")
        n = int(np.prod(d["shape"]))
        planes = np.frombuffer(raw, np.uint8, n * dtype.itemsize, d["offset"]).reshape(dtype.itemsize, n)
        out[name] = np.ascontiguousarray(planes.T).view(dtype).reshape(d["shape"])
    return out


def read_image(site: Path, image_id: str, convs: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """One traced image of a built site: (its .json, its arrays), with convs the conv outputs rebuilt as the page
    rebuilds them (decode_convs: two float64 convs per layer)."""
    meta = json.loads((site / "data" / f"img-{image_id}.json").read_text())
    arrays = unpack((site / "data" / f"img-{image_id}.bin.gz").read_bytes(), meta["arrays"])
    if not convs:
        return meta, arrays
    s = json.loads((site / "data" / "site.json").read_text())
    weights = unpack((site / "data" / s["weights"]["file"]).read_bytes(), s["weights"]["arrays"])
    return meta, decode_convs(arrays, weights, s["layers"])


# ------------------------------------------------------------------- conv outputs: float64 sums + numpy_ref's steps
#
# numpy_ref's float32 conv outputs are 600,000 numbers per image whose low bits are the rounding of a float32 BLAS
# matmul: stored as they are, they cost ~2.3 bytes each even gzipped. The page does not need them stored. Given
# a layer's input (exact float32, a selection of the layer below's outputs) and the weights, it computes every
# unit's sum itself in float64 (each product of two float32 numbers is exact in float64), rounds it to float32,
# and moves it by the number of float32 steps numpy_ref's value lies away from that rounding (int8, about half of
# them within -2..2: ~0.5 byte a unit gzipped). The result is numpy_ref's float32 value, bit for bit, in any
# summation order: a float64 sum of n terms is within n 2^-53 sum|terms| of the exact sum, so wherever the exact
# sum is farther than that from a float32 rounding boundary every order rounds alike. The units nearer a boundary
# than twice that bound (judged from this side's float64 sum), and those more than 127 steps away (where the sum
# cancels to near 0), carry their value itself: step code EXACT, the values in order in LAYER_exact.

EXACT = -128          # the step code of a unit whose float32 value is stored in LAYER_exact


def float_steps(a: np.ndarray) -> np.ndarray:
    """float32 numbers as int64 keys in their order: consecutive float32 numbers have consecutive keys
    (-0.0 is the step below +0.0)."""
    b = a.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(b >= 0, b, -(b & 0x7FFFFFFF) - 1)


def from_steps(k: np.ndarray) -> np.ndarray:
    """float_steps' inverse."""
    b = np.where(k >= 0, k, (-(k + 1)) | 0x80000000)
    return b.astype(np.uint32).view(np.float32)


def conv_sum64(inp: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, padding: int,
               bound: bool = False):
    """A conv layer's sums in float64 from its float32 input (C, H, W) and weights: (F, OH, OW). With bound, also
    the rounding bound of any float64 summation order, n 2^-53 (sum|x w| + |b|) / (1 - n 2^-53) with n = C k k + 1
    terms (F, OH, OW): one more conv, of the absolute values, which only the encoder needs."""
    x, w, b = (np.asarray(a, np.float64) for a in (inp[None], weight, bias))
    s = Fn.conv2d_forward(x, w, b, stride, padding)[0][0]
    if not bound:
        return s
    m = Fn.conv2d_forward(np.abs(x), np.abs(w), np.abs(b), stride, padding)[0][0]
    u = (weight[0].size + 1) * 2.0 ** -53
    return s, m * u / (1 - u)


def encode_steps(value: np.ndarray, s: np.ndarray, exact: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float32 `value` as (int8 steps from float64 `s` rounded to float32, the float32 values of the units coded
    EXACT: those more than 127 steps away and those marked in `exact`)."""
    steps = float_steps(value) - float_steps(s.astype(np.float32))
    exact = np.abs(steps) > 127 if exact is None else exact | (np.abs(steps) > 127)
    steps[exact] = EXACT
    return steps.astype(np.int8), value[exact].astype(np.float32)


def decode_steps(s: np.ndarray, steps: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """encode_steps' inverse, as the page's data.js does it: float32, the shape of `steps`."""
    out = from_steps(float_steps(s.astype(np.float32)) + steps.astype(np.int64))
    out[steps == EXACT] = exact
    return out


def encode_conv(value: np.ndarray, inp: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int,
                padding: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy_ref's float32 conv output `value` (F, OH, OW) as (steps int8 (F, OH, OW), exact float32 (m,)), the
    units whose float64 sum lies within twice the rounding bound of a float32 rounding boundary coded EXACT."""
    s, bound = conv_sum64(inp, weight, bias, stride, padding, bound=True)
    r = s.astype(np.float32)
    boundaries = [(r.astype(np.float64) + np.nextafter(r, np.float32(v)).astype(np.float64)) / 2
                  for v in (np.inf, -np.inf)]
    return encode_steps(value, s, np.minimum(*(np.abs(s - m) for m in boundaries)) <= 2 * bound)


def decode_conv(steps: np.ndarray, exact: np.ndarray, inp: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                stride: int, padding: int) -> np.ndarray:
    """encode_conv's inverse: float32 (F, OH, OW)."""
    return decode_steps(conv_sum64(inp, weight, bias, stride, padding), steps, exact)


def resize64(image: np.ndarray) -> np.ndarray:
    """The 28x28 uint8 image as the page resizes it to 224x224, in float64: pixels / 255, then torch's bilinear
    (align_corners=False: source row (i + 0.5) / 8 - 0.5, clamped at 0), with the same operations in the same order
    as data.js, so both sides get the same float64 numbers; numpy_ref's input x (torch's float32 resize) is then
    stored as float32 steps from them. (numpy_ref.walkthrough.resize_bilinear is the same resize as two matmuls,
    whose BLAS order and fused multiply-adds a page cannot repeat bit for bit.) (1, 224, 224)."""
    p = image.astype(np.float64) / 255                            # (28, 28)
    src = np.maximum((np.arange(224, dtype=np.float64) + 0.5) * 0.125 - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)                           # (224,)
    i1 = np.minimum(i0 + 1, 27)
    l1 = src - i0
    l0 = 1 - l1
    row = lambda i: l0[None, :] * p[i][:, i0] + l1[None, :] * p[i][:, i1]   # noqa: E731 (224, 224)
    return (l0[:, None] * row(i0) + l1[:, None] * row(i1))[None]


def decode_convs(arrays: dict, weights: dict, layers: list[dict]) -> dict:
    """The stored arrays with the input x (resize64) and every conv output (decode_conv) rebuilt, layer after
    layer as the page does: a conv layer's input is the x, ReLU or pool output below it, derived by selection
    (ReLU by sign, pool at numpy_ref's winners)."""
    out = dict(arrays)
    out["x"] = decode_steps(resize64(arrays["image"]), arrays["x_steps"], arrays["x_exact"])   # (1, 224, 224)
    prev, conv = out["x"], None
    for geo in layers:
        name, kind = geo["name"], geo["kind"]
        if kind == "Conv2d":
            conv = name
            prev = out[name] = decode_conv(arrays[f"{name}_steps"], arrays[f"{name}_exact"], prev,
                                           weights[f"{name}.weight"], weights[f"{name}.bias"],
                                           geo["stride"], geo["padding"])
        elif kind == "ReLU":
            prev = np.maximum(prev, 0)
        elif kind == "MaxPool2d":
            prev = pool_select(out, conv, name)
        elif kind == "Flatten":
            break                                                # the FC outputs are stored as they are
    return out


def compand(g: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 q = round(127 sign(g) sqrt(|g| / scale)), scale = max |g|: drawn only; the square root keeps a
    gradient 10^4 times below the largest one visible. Decoded as g = sign(q) (q / 127)^2 scale."""
    scale = float(np.abs(g).max())
    if scale == 0:
        return np.zeros(g.shape, np.int8), 0.0
    q = np.rint(127 * np.sign(g) * np.sqrt(np.abs(g) / scale))
    return q.astype(np.int8), scale


def window_argmax(inp: np.ndarray, layer: MaxPool2d) -> np.ndarray:
    """numpy_ref's max pool winners (its return_indices, flat h*W + w of the first maximum) as the position
    kh*K + kw inside each output's window, uint8 (C, OH, OW)."""
    (_, idx), _ = Fn.max_pool2d_forward(inp, layer.kernel_size, layer.stride, return_indices=True)  # (1, C, OH, OW)
    idx = idx[0]
    W, s, k = inp.shape[-1], layer.stride, layer.kernel_size
    oh = np.arange(idx.shape[1])[:, None]                        # (OH, 1)
    ow = np.arange(idx.shape[2])[None, :]                        # (1, OW)
    return ((idx // W - oh * s) * k + (idx % W - ow * s)).astype(np.uint8)   # (C, OH, OW)


@dataclass
class Trace:
    arrays: dict[str, np.ndarray]   # the .bin.gz
    meta: dict                      # the .json


def trace(model: Model, image: np.ndarray, label: int | None, source: str) -> Trace:
    """One 28x28 uint8 image through numpy_ref: the forward in float32 (every layer's output), the backward of
    the predicted class's score in float64 (and of the true class's, in float32, when the prediction is wrong),
    the finite-difference check of one weight per layer, the FC layers' largest terms."""
    net32, net64 = model.net32, model.net64
    names = layer_names(net32)
    x = to_input(torch.from_numpy(np.array(image, dtype=np.uint8))[None]).numpy()   # (1, 1, 224, 224) float32
    arrays: dict[str, np.ndarray] = {"image": image.astype(np.uint8), "x": x[0]}

    outs, h, conv_inputs = [], x, {}                             # float32 forward, layer by layer
    for name, layer in zip(names, net32):
        if isinstance(layer, MaxPool2d):
            arrays[f"{name}_argmax"] = window_argmax(h, layer)   # (C, OH, OW) uint8
        if isinstance(layer, Conv2d):
            conv_inputs[name] = h[0]
        h = layer.forward(h)
        outs.append(h)
        if name.startswith("conv") or name in ("fc6", "fc7", "fc8"):
            arrays[name] = h[0]                                  # before the ReLU, exact float32
    net32.clear_cache()
    logits = outs[-1][0].astype(np.float64)                      # (10,)
    probs = softmax(logits)
    pred = int(probs.argmax())
    classes = [pred]
    if label is not None and label != pred:
        classes.append(int(label))

    scales, gradcheck = {}, []
    for n_class, c in enumerate(classes):
        # the predicted class in float64 (its weight gradients are checked), a second one in float32 (drawn only)
        net = net64 if n_class == 0 else net32
        grads, inputs = class_backward(net, x.astype(net[0].weight.data.dtype), c)
        for name, g in grads.items():
            q, s = compand(g[0])
            arrays[f"grad{c}_{name}"] = q
            scales[f"grad{c}_{name}"] = s
        arrays[f"saliency{c}_28"] = to_pixels(grads["x"].astype(np.float64))[0].astype(np.float32)  # (28, 28)
        if n_class == 0:
            gradcheck = weight_check(net64, inputs, c)
        net.zero_grad()
    backward = {"classes": classes, "scales": scales}

    meta = {
        "source": source, "label": label, "pred": pred, "probs": [float(p) for p in probs],
        "logits": [float(v) for v in logits],
        "fc": fc_terms(net32, names, arrays, probs),
        "backward": backward, "gradcheck": gradcheck,
        "default_unit": default_unit(arrays),
    }
    arrays["x_steps"], arrays["x_exact"] = encode_steps(arrays.pop("x"), resize64(image))
    for name, layer in zip(names, net32):                        # stored as float32 steps from the float64 sums
        if isinstance(layer, Conv2d):
            steps, exact = encode_conv(arrays.pop(name), conv_inputs[name], layer.weight.data, layer.bias.data,
                                       layer.stride, layer.padding)
            arrays[f"{name}_steps"], arrays[f"{name}_exact"] = steps, exact
    return Trace(arrays, meta)


def class_backward(net, x: np.ndarray, c: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """numpy_ref's backward of logits[0, c] (dout = one-hot), layer by layer: the gradient with respect to the
    outputs STORED_GRADIENTS names and to the input x (dropout and flatten only pass it on); and every
    layer's input from the forward. The parameter gradients stay in the layers (weight.grad) for weight_check."""
    names = layer_names(net)
    inputs, h = [], x
    for layer in net:                                            # the forward; every layer keeps its cache
        inputs.append(h)
        h = layer.forward(h)
    dout = np.zeros_like(h)                                      # (1, 10)
    dout[0, c] = 1.0
    keep = {}
    for name, layer in zip(reversed(names), reversed(list(net))):
        if name in STORED_GRADIENTS:
            keep[name] = dout                                    # d score / d (this layer's output)
        dout = layer.backward(dout)
    keep["x"] = dout                                             # (1, 1, 224, 224)
    return keep, inputs


def weight_check(net64, inputs: list[np.ndarray], c: int, chosen: dict[str, tuple] | None = None) -> list[dict]:
    """For each conv and FC layer, the weight with the largest |d logits[c] / d w| (or `chosen`: {layer: index},
    those layers only): numpy_ref's analytic gradient (from the backward, already in weight.grad) beside the
    central difference (s(w + h) - s(w - h)) / 2h, h = 1e-6, float64, the forward rerun from that layer on
    (`inputs`: every layer's input, float64); and their relative error |a - b| / max(1e-8, |a| + |b|)."""
    names = layer_names(net64)
    out = []
    for i, (name, layer) in enumerate(zip(names, net64)):
        if not isinstance(layer, (Conv2d, Linear)) or (chosen is not None and name not in chosen):
            continue
        grad = layer.weight.grad
        flat = int(np.abs(grad).argmax()) if chosen is None else int(np.ravel_multi_index(chosen[name], grad.shape))
        w = layer.weight.data.reshape(-1)                        # a view: perturbed in place, then restored
        scores = []
        old = w[flat]
        for step in (FD_STEP, -FD_STEP):
            w[flat] = old + step
            h = inputs[i]
            for later in list(net64)[i:]:
                h = later.forward(h)
            scores.append(float(h[0, c]))
        w[flat] = old
        net64.clear_cache()
        numeric = (scores[0] - scores[1]) / (2 * FD_STEP)
        analytic = float(grad.reshape(-1)[flat])
        out.append({"layer": name, "index": [int(v) for v in np.unravel_index(flat, grad.shape)],
                    "weight": float(old), "analytic": analytic, "numeric": numeric, "step": FD_STEP,
                    "rel_error": rel_error(np.array(analytic), np.array(numeric))})
    return out


def check_one_weight(model: Model, image: np.ndarray, c: int, layer: str, index: list) -> dict:
    """weight_check for one weight of the user's choice (POST /api/gradcheck): class c's score of a 28x28 uint8
    image. ValueError naming the layer or index when there is no such weight."""
    shapes = {n: l.weight.data.shape for n, l in zip(layer_names(model.net64), model.net64) if hasattr(l, "weight")}
    if layer not in shapes:
        raise ValueError(f"layer {layer!r}: the layers with weights are {', '.join(shapes)}")
    shape = shapes[layer]
    if (not isinstance(index, list) or len(index) != len(shape)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n for v, n in zip(index, shape))):
        raise ValueError(f"index {index!r}: {layer}.weight has shape {list(shape)}, so the index is "
                         f"{len(shape)} integers, each in 0..size-1")
    x = to_input(torch.from_numpy(np.array(image, dtype=np.uint8))[None]).numpy().astype(np.float64)
    _, inputs = class_backward(model.net64, x, c)
    row = weight_check(model.net64, inputs, c, {layer: tuple(index)})[0]
    model.net64.zero_grad()
    return row


def fc_terms(net32, names: list[str], arrays: dict, probs: np.ndarray) -> dict:
    """The FC layers' sums taken apart: logit[c] = sum_j W8[c, j] relu7[j] + b8[c] for every class c, then for the
    largest terms' units the same sum one layer down (fc7 from relu6, fc6 from pool5's 6400 features). Each sum
    lists its TOP_TERMS largest terms by |term|, the rest summed, the bias and numpy_ref's value."""
    layers = dict(zip(names, net32))
    relu = lambda a: np.maximum(a, 0).astype(np.float64)          # noqa: E731 (relu6/relu7 = fc6/fc7 where positive)
    pool5 = pool_select(arrays, "conv5", "pool5").reshape(-1).astype(np.float64)   # (6400,)
    inputs = {"fc8": relu(arrays["fc7"]), "fc7": relu(arrays["fc6"]), "fc6": pool5}

    def terms(layer: str, unit: int) -> dict:
        W = layers[layer].weight.data[unit].astype(np.float64)    # (in,)
        t = W * inputs[layer]                                     # (in,) exact products of float32 numbers
        top = np.argsort(-np.abs(t), kind="stable")[:TOP_TERMS]
        return {"layer": layer, "unit": unit, "bias": float(layers[layer].bias.data[unit]),
                "value": float(arrays[layer][unit]), "rest": float(t.sum() - t[top].sum()), "count": int(t.size),
                "terms": [{"j": int(j), "w": float(W[j]), "x": float(inputs[layer][j]), "t": float(t[j])}
                          for j in top]}

    out = {"fc8": [terms("fc8", c) for c in range(len(probs))], "fc7": {}, "fc6": {}}
    for c in range(len(probs)):
        for t8 in out["fc8"][c]["terms"][:3]:
            j = t8["j"]
            if j not in out["fc7"]:
                out["fc7"][j] = terms("fc7", j)
            for t7 in out["fc7"][j]["terms"][:2]:
                i = t7["j"]
                if i not in out["fc6"]:
                    out["fc6"][i] = terms("fc6", i)
    return out


def pool_select(arrays: dict, conv: str, pool: str) -> np.ndarray:
    """A pool layer's output as the page computes it: the ReLU output (the conv output where positive) at the
    window position numpy_ref's argmax picked. float32 (C, OH, OW), bit for bit numpy_ref's pool output."""
    a = np.maximum(arrays[conv], 0)                              # (C, H, W)
    arg = arrays[f"{pool}_argmax"].astype(np.int64)              # (C, OH, OW)
    C, OH, OW = arg.shape
    rows = np.arange(OH)[:, None] * 2 + arg // 3                 # (C, OH, OW): stride 2, 3x3 windows
    cols = np.arange(OW)[None, :] * 2 + arg % 3
    return a[np.arange(C)[:, None, None], rows, cols]


def default_unit(arrays: dict) -> dict:
    """The unit the arithmetic view opens on: conv2's largest output (a sum of 2400 products, far from 0)."""
    c, oh, ow = np.unravel_index(int(np.argmax(arrays["conv2"])), arrays["conv2"].shape)
    return {"layer": "conv2", "c": int(c), "y": int(oh), "x": int(ow)}


def write_trace(data_dir: Path, image_id: str, tr: Trace) -> dict:
    blob, index = pack(tr.arrays)
    (data_dir / f"img-{image_id}.bin.gz").write_bytes(blob)
    meta = {**tr.meta, "id": image_id, "arrays": index}
    (data_dir / f"img-{image_id}.json").write_text(json.dumps(meta, separators=(",", ":")))
    return {"id": image_id, "source": tr.meta["source"], "label": tr.meta["label"], "pred": tr.meta["pred"],
            "p": tr.meta["probs"][tr.meta["pred"]]}


# ----------------------------------------------------------------------------------------------- the site

def scan_test_set(model: Model, images: np.ndarray, count: int) -> np.ndarray:
    """numpy_ref's float32 logits (count, 10) of the first `count` test images, BATCH at a time."""
    net, out = model.net32, []
    for start in range(0, count, BATCH):
        x = to_input(torch.from_numpy(images[start:min(start + BATCH, count)])).numpy()   # (B, 1, 224, 224)
        out.append(net.forward(x))                                            # (B, 10)
        net.clear_cache()
    return np.concatenate(out)


def choose_images(labels: np.ndarray, logits: np.ndarray, n: int) -> list[int]:
    """n test indices: one per class first (the first the network gets right, else the first of the class; at most
    n - n // 3 of them), then the most confident mistakes among the scanned images."""
    preds = logits.argmax(1)
    conf = softmax(logits)[np.arange(len(preds)), preds]
    mistakes = [int(i) for i in np.flatnonzero(preds != labels[:len(preds)])]
    mistakes.sort(key=lambda i: -conf[i])
    per_class = min(len(CLASS_NAMES), n - min(n // 3, len(mistakes)))
    chosen = []
    for k in range(per_class):
        of_class = np.flatnonzero(labels[:len(preds)] == k)
        right = [int(i) for i in of_class if preds[i] == k]
        if right or len(of_class):
            chosen.append(right[0] if right else int(of_class[0]))
    for i in mistakes:
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen[:n]


def copy_page(out: Path) -> None:
    """The page's files (index.html, the ES modules, style.css) from the package into out."""
    for entry in PAGE_DIR.iterdir():
        if entry.is_file() and entry.name.endswith((".html", ".js", ".css")):
            shutil.copyfile(entry, out / entry.name)


def build_site(model: Model, out: Path, n_images: int, scan: int, data_dir: str | None = None,
               progress=print) -> dict:
    """Everything the page needs, into out. Returns site.json's content."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("img-*"):
        old.unlink()
    copy_page(out)
    test = load_split(find_data_dir(data_dir), "test")
    images, labels = test.images.numpy(), test.labels.numpy()
    scan = min(scan, len(labels))
    progress(f"scanning the first {scan} test images with numpy_ref (float32) to find one per class and mistakes")
    logits = scan_test_set(model, images, scan)
    preds = logits.argmax(1)
    chosen = choose_images(labels, logits, n_images)

    net = model.net32
    weights = {}
    for name, layer in zip(layer_names(net), net):
        if isinstance(layer, Conv2d):
            weights[f"{name}.weight"] = layer.weight.data
            weights[f"{name}.bias"] = layer.bias.data
    blob, windex = pack(weights)
    (data / "weights.bin.gz").write_bytes(blob)

    entries = []
    for k, i in enumerate(chosen):
        progress(f"image {k + 1}/{len(chosen)}: test #{i} ({CLASS_NAMES[labels[i]]})")
        tr = trace(model, images[i], int(labels[i]), f"test #{i}")
        entry = write_trace(data, str(k), tr)
        entries.append({**entry, "index": int(i)})

    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=np.int64)
    np.add.at(confusion, (labels[:scan], preds), 1)
    site = {
        "model": {"label": model.label, "trained": model.trained, "variant": "d2l"},
        "classes": list(CLASS_NAMES),
        "layers": geometry(net),
        "triton": triton_launch(),
        "weights": {"file": "weights.bin.gz", "arrays": windex},
        "images": entries,
        "scan": {"count": scan, "accuracy": float((preds == labels[:scan]).mean()),
                 "confusion": confusion.tolist(), "preds": preds.tolist(), "labels": labels[:scan].tolist()},
        "run_evaluation": model.evaluation,
    }
    (data / "site.json").write_text(json.dumps(site, separators=(",", ":")))
    # served as static files the page can only show what was precomputed; ExplainServer answers this file itself
    (data / "server.json").write_text(json.dumps({"serve": False}))
    return site


# ----------------------------------------------------------------------------------------------- the server

def decode_upload(body: bytes) -> np.ndarray:
    """A POSTed image -> uint8 (28, 28) grey. ValueError with the message the page shows."""
    from PIL import Image, UnidentifiedImageError

    if len(body) > MAX_UPLOAD_BYTES:
        raise ValueError(f"the upload is {len(body)} bytes; at most {MAX_UPLOAD_BYTES} (a 28x28 image is a few "
                         f"hundred bytes)")
    if not body:
        raise ValueError("the upload is empty: send a 28x28 grey image (PNG, JPEG, ...)")
    try:
        with Image.open(io.BytesIO(body)) as im:
            im.load()
            size = im.size
            grey = np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image Pillow can read ({exc.__class__.__name__}); send a 28x28 grey PNG or JPEG") \
            from exc
    if size != (28, 28):
        raise ValueError(f"the image is {size[0]}x{size[1]} pixels; the network takes 28x28 grey images "
                         f"(Fashion-MNIST's size)")
    return grey


class ExplainServer(http.server.ThreadingHTTPServer):
    """The site's folder over HTTP on 127.0.0.1, plus POST /api/trace (an image in, a traced image id out)."""

    def __init__(self, site: Path, model: Model, port: int):
        self.site, self.model, self.lock, self.uploads = site, model, threading.Lock(), 0
        handler = lambda *a, **kw: ExplainHandler(*a, directory=str(site), **kw)   # noqa: E731
        super().__init__(("127.0.0.1", port), handler)


class ExplainHandler(http.server.SimpleHTTPRequestHandler):
    server: ExplainServer

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass                                # quiet: the page's requests are not news

    def _json(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?")[0] == "/data/server.json":
            return self._json(200, {"serve": True, "max_upload_bytes": MAX_UPLOAD_BYTES})
        return super().do_GET()

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/api/gradcheck":
            return self._gradcheck()
        if path != "/api/trace":
            return self._json(404, {"error": f"no such endpoint: {self.path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._json(400, {"error": "bad Content-Length"})
        if length > MAX_UPLOAD_BYTES:
            if length <= DRAIN_BYTES:       # read it anyway, so the client gets the answer, not a reset connection
                for _ in range(0, length, 1 << 16):
                    self.rfile.read(min(1 << 16, length))
                    length -= 1 << 16
            else:
                self.close_connection = True
            return self._json(413, {"error": f"the upload is {self.headers.get('Content-Length')} bytes; at most "
                                              f"{MAX_UPLOAD_BYTES} (a 28x28 image is a few hundred bytes)"})
        body = self.rfile.read(length)
        try:
            image = decode_upload(body)
        except ValueError as exc:
            return self._json(400, {"error": str(exc)})
        srv = self.server
        with srv.lock:                      # numpy_ref's layers keep caches: one trace at a time
            srv.uploads += 1
            image_id = f"u{srv.uploads}"
            tr = trace(srv.model, image, None, "drawn or uploaded")
            write_trace(srv.site / "data", image_id, tr)
        return self._json(200, {"id": image_id, "pred": tr.meta["pred"]})

    def _gradcheck(self):
        """{"image": ID, "layer": "conv2", "index": [f, c, kh, kw]} -> weight_check's row for that weight."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= 4096:
                raise ValueError("send a small JSON object: {image, layer, index}")
            ask = json.loads(self.rfile.read(length))
            if not isinstance(ask, dict):
                raise ValueError("send a JSON object: {image, layer, index}")
            image_id = str(ask.get("image"))
            if not image_id.replace("u", "", 1).isdigit() or not (self.server.site / "data" /
                                                                 f"img-{image_id}.json").is_file():
                raise ValueError(f"image {image_id!r}: no such image on this site")
            meta, arrays = read_image(self.server.site, image_id, convs=False)     # the image is all it needs
            with self.server.lock:
                row = check_one_weight(self.server.model, arrays["image"], meta["pred"], ask.get("layer"),
                                       ask.get("index"))
        except ValueError as exc:                     # bad JSON is a ValueError too
            return self._json(400, {"error": str(exc)})
        return self._json(200, row)


# ----------------------------------------------------------------------------------------------- the command

def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="PATH", help="best.pt / last.pt of a d2l run")
    which.add_argument("--untrained", action="store_true", help="d2l's init from --seed (labelled on the page)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --untrained weights (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the site's folder (made if missing)")
    parser.add_argument("--images", type=int, default=20, metavar="N",
                        help="test images precomputed: one per class, then the most confident mistakes "
                             "(at least N // 3 of them where there are; default 20)")
    parser.add_argument("--scan", type=int, default=300, metavar="N",
                        help="test images numpy_ref classifies to find them and draw the confusion matrix "
                             "(default 300)")
    parser.add_argument("--serve", action="store_true", help="then serve the site on 127.0.0.1 (Ctrl-C stops)")
    parser.add_argument("--port", type=int, help="--serve's port (default 8000; 0: any free one)")
    parser.add_argument("--data-dir", help="folder with the four IDX files (.gz or raw); or FASHION_MNIST_DIR")


def run(args: argparse.Namespace) -> int:
    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    if args.scan < 1:
        raise ValueError(f"--scan must be >= 1, got {args.scan}")
    if args.port is not None and not args.serve:
        raise ValueError("--port needs --serve")
    port = 8000 if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")
    model = load_model(args.checkpoint, args.untrained, args.seed)
    out = Path(args.out)
    print(f"explaining {model.label}", flush=True)
    site = build_site(model, out, args.images, args.scan, args.data_dir,
                      progress=lambda s: print(s, flush=True))
    print(f"wrote {out} ({len(site['images'])} images); open {out / 'index.html'} through a web server", flush=True)
    if not args.serve:
        return 0
    server = ExplainServer(out, model, port)
    host, port = server.server_address[:2]
    print(f"serving on http://{host}:{port}/index.html (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
