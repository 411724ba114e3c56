"""The layers a benchmark times and their napkin math: LayerSpec, one conv (+bias+ReLU), pool or linear of the
seed's AlexNet at a batch and input size, read off the model itself (alexnet_specs), and the paper variant's two
local response normalizations (paper_lrn_specs; d2l's model has none).

Per layer (N batch, C channels in, F filters out, H/W input, OH/OW output, K kernel):

    conv forward      FLOPs = 2 * N * F * OH * OW * C * K * K        (multiply + add; bias and ReLU left out: < 0.1%)
    conv backward     FLOPs = 2 * forward (dW and dX), 1 * forward for conv1 (its input is the data: no dX)
    conv bytes        forward: x + w + b + y;  backward: dy + y (ReLU mask) + x + w + dx + dw + db
    pool bytes        what each implementation's kernels move (POOL_TRAFFIC; pools do no matmul work):
                      triton forward x + y (+ a 1-byte tap per output in training), backward dy + taps + dx;
                      ATen (the "cudnn" figures) forward x + y + int64 indices, backward dy + indices + dx twice
    linear            as a 1x1 conv: FLOPs = 2 * N * in * out forward, twice that backward
    lrn               E = N*C*H*W elements, n = size, Ep = N*(C+n-1)*H*W (torch's zero-padded tensor of squares):
                      FLOPs = (2n+3) E forward, + (2n^2+6n+1) E backward (our fused kernels' arithmetic, the
                      op's work whoever computes it; transcendentals not counted); bytes what each
                      implementation's kernels move (LRN_TRAFFIC, in E and Ep): ours 2E forward and 3E backward
                      (1 kernel each), torch's (14E + 2Ep) in 8 kernels and (38E + 2Ep) in 16 (docs/triton_lrn.md)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from numpy_ref.geometry import conv_output_size, pool_output_size
from numpy_ref.model import layer_names


@dataclass(frozen=True)
class LayerSpec:
    """One conv (+bias+ReLU), pool, linear or LRN of AlexNet, at a batch and input size.
    N batch, C channels in, F filters out, H/W input height/width, K kernel (an LRN: F = C, K = 1, its window
    across channels in `lrn`)."""
    name: str
    kind: str          # "conv" | "pool" | "linear" | "lrn"
    N: int
    C: int
    H: int
    W: int
    F: int
    K: int
    stride: int
    padding: int
    first: bool = False  # the first layer: its input is the data, so the backward computes no dX
    lrn: tuple = ()      # an LRN's (size, alpha, beta, k), torch.nn.functional.local_response_norm's arguments

    def _out(self, size: int) -> int:
        size_of = pool_output_size if self.kind == "pool" else conv_output_size
        return size_of(size, self.K, self.stride, self.padding)

    @property
    def OH(self) -> int:
        return self._out(self.H)

    @property
    def OW(self) -> int:
        return self._out(self.W)

    def shapes(self) -> dict:
        shapes = {"N": self.N, "C": self.C, "H": self.H, "W": self.W, "F": self.F, "K": self.K,
                  "stride": self.stride, "padding": self.padding, "OH": self.OH, "OW": self.OW}
        if self.kind == "lrn":
            shapes.update(zip(("size", "alpha", "beta", "k"), self.lrn))
        return shapes

    @property
    def by_bytes(self) -> bool:
        """Pools and LRNs are judged by bytes moved (GB/s against the copy bandwidth), not by FLOPs."""
        return self.kind in ("pool", "lrn")

    def flops(self, passes: str = "fwd") -> int:
        """Multiply-adds counted as 2 FLOPs; pools count 0 (they are judged by bytes). An LRN: our fused kernels'
        per-element arithmetic (docs/triton_lrn.md, read off the sm_90 PTX for n = 5: 13 forward, ~80 backward)."""
        if self.kind == "pool":
            return 0
        if self.kind == "lrn":
            n, E = self.lrn[0], self.N * self.C * self.H * self.W
            fwd = (2 * n + 3) * E
            return fwd if passes == "fwd" else fwd + (2 * n * n + 6 * n + 1) * E
        fwd = 2 * self.N * self.F * self.OH * self.OW * self.C * self.K * self.K
        if passes == "fwd":
            return fwd
        return fwd * (2 if self.first else 3)  # + dW (+ dX)

    def bytes(self, passes: str = "fwd", itemsize: int = 4, impl: str = "triton") -> int:
        """Bytes the pass reads and writes in device memory, each tensor counted once (the caches serve re-reads).

        Convs: the fewest any implementation must move (the same for all). Pools: what `impl`'s kernels really
        move (POOL_TRAFFIC): the argmax record the forward writes for the backward and reads back there, and
        ATen's zero-fill of dx, are counted where they happen; nothing is recomputed from x. LRNs: what `impl`'s
        kernels move (LRN_TRAFFIC), in elements E of x and Ep of torch's padded tensor of squares."""
        x = self.N * self.C * self.H * self.W
        y = self.N * self.F * self.OH * self.OW
        if self.kind == "lrn":
            if impl not in LRN_TRAFFIC:
                raise ValueError(f"impl must be one of {tuple(LRN_TRAFFIC)}, got {impl!r}")
            padded = self.N * (self.C + self.lrn[0] - 1) * self.H * self.W  # Ep
            no_grad, train_fwd, bwd = (itemsize * (e * x + ep * padded) for e, ep in LRN_TRAFFIC[impl])
            return no_grad if passes == "fwd" else train_fwd + bwd
        if self.kind == "pool":
            if impl not in POOL_TRAFFIC:
                raise ValueError(f"impl must be one of {tuple(POOL_TRAFFIC)}, got {impl!r}")
            no_grad_record, record, dx_writes = POOL_TRAFFIC[impl]
            if record == "taps":
                record = pool_tap_bytes(self.K)
            if passes == "fwd":  # under torch.no_grad(), x needing no gradient
                return itemsize * (x + y) + no_grad_record * y
            fwd = itemsize * (x + y) + record * y  # read x; write out and the record
            bwd = itemsize * y + record * y + dx_writes * itemsize * x  # read dy and the record; write dx
            return fwd + bwd
        w = self.F * self.C * self.K * self.K
        b = self.F
        fwd = x + w + b + y
        bwd = y + y + x + w + (0 if self.first else x) + w + b  # dy, y, x, w, dx, dw, db
        return itemsize * (fwd if passes == "fwd" else fwd + bwd)


def pool_tap_bytes(kernel: int) -> int:
    """Bytes per output of a max pool's 1-byte-class argmax record: the tap kh*K + kw in the smallest int
    (triton_kernels/pool.py's _tap_dtype; inductor's int8 offsets)."""
    taps = kernel * kernel
    return 1 if taps <= 127 else 2 if taps <= 32767 else 4


# What each implementation's max pool moves besides x, out, dy and dx (the `impl` of a figure): (record bytes per
# output written by a forward under no_grad, record bytes per output written by a training forward and read by its
# backward, how many times the backward writes dx). Ours and inductor's: a 1-byte tap in training only, a gather
# backward; ATen's on CUDA (the "cudnn" figures: torch does not use cuDNN here): int64 indices always and dx
# zero-filled first; ATen's on a CPU: no indices under no_grad. docs/benchmarks/README.md, "Napkin math".
POOL_TRAFFIC = {
    "triton": (0, "taps", 1),
    "compile": (0, "taps", 1),
    "cudnn": (8, 8, 2),
    "torch-cpu": (0, 8, 2),
}


# What each implementation's LRN kernels read + write, as (multiple of E, multiple of Ep) elements, for (the forward
# under no_grad, the forward in training, the backward); E = N*C*H*W, Ep = N*(C+n-1)*H*W, a window's re-reads of
# neighbouring channels left to the caches. Derived in docs/triton_lrn.md (ours, eager torch's 8 + 16 kernels
# counted with torch.profiler) and docs/benchmarks/README.md (inductor's, read off its generated code).
LRN_TRAFFIC = {
    "triton": ((2, 0), (2, 0), (3, 0)),
    "cudnn": ((14, 2), (14, 2), (38, 2)),
    "torch-cpu": ((14, 2), (14, 2), (38, 2)),
    "compile": ((2, 0), (5, 2), (10, 1)),
}


def alexnet_specs(batch: int = 128, resize: int = 224, channel_div: int = 1) -> list[LayerSpec]:
    """conv1..conv5, pool1, pool2, pool5, fc6..fc8 of the seed's nn.Sequential, with their input shapes, read off the
    model itself (built on the meta device: no memory). channel_div > 1 scales every channel count down (a CPU
    smoke run in the interpreter); the first conv keeps its 1 input channel."""
    from torch_model.model import alexnet

    with torch.device("meta"):
        return list(_walk(alexnet(init=False), batch, resize, channel_div))


def paper_lrn_specs(batch: int = 128, resize: int = 227, channel_div: int = 1) -> list[LayerSpec]:
    """lrn1 and lrn2 of the 2012 paper's network (`alexnet(variant="paper")`: after conv1+ReLU and conv2+ReLU,
    torch's LocalResponseNorm(**PAPER_LRN)) with their input shapes, read off the model itself (built on the meta
    device) for a resize x resize input: 96x55x55 and 256x27x27 at the paper's 227. channel_div > 1 divides their
    channel counts (a CPU smoke run in the interpreter)."""
    from torch_model.model import alexnet

    with torch.device("meta"):
        layers = _walk(alexnet(variant="paper", init=False), batch, resize, channel_div, "the paper variant's ")
        return list(itertools.islice((s for s in layers if s.kind == "lrn"), 2))  # the layers after them unread


def _walk(net, batch: int, resize: int, channel_div: int, whose: str = ""):
    """A LayerSpec for each conv, pool, linear and LRN of `net` in turn, named as numpy_ref.model.layer_names names
    them, with its input shape for a resize x resize image; channel_div divides every channel count but the data's
    and the 10 classes'."""
    from torch import nn

    if batch < 1 or resize < 1 or channel_div < 1:
        raise ValueError(f"batch, resize and channel_div must be >= 1, got {batch}, {resize}, {channel_div}")
    C, H, W = net[0].in_channels, resize, resize
    first = True
    for name, m in zip(layer_names(net), net):
        lrn = ()
        if isinstance(m, nn.Conv2d):
            kind, F, K = "conv", max(1, m.out_channels // channel_div), m.kernel_size[0]
            s, p = m.stride[0], m.padding[0]
        elif isinstance(m, nn.MaxPool2d):
            kind, F, K, s, p = "pool", C, m.kernel_size, m.stride, m.padding
        elif isinstance(m, nn.Linear):
            kind, F, K, s, p = "linear", m.out_features, 1, 1, 0
            F = F if m.out_features <= 10 else max(1, F // channel_div)
            C, H, W = C * H * W, 1, 1
        elif isinstance(m, nn.LocalResponseNorm):
            kind, F, K, s, p, lrn = "lrn", C, 1, 1, 0, (m.size, float(m.alpha), float(m.beta), float(m.k))
        else:
            continue
        spec = LayerSpec(name, kind, batch, C, H, W, F, K, s, p, first=first, lrn=lrn)
        first = False
        if spec.OH < 1 or spec.OW < 1:
            raise ValueError(f"--resize {resize}: {whose}{name} gets a {H}x{W} input, smaller than its {K}x{K} window")
        yield spec
        C, H, W = F, spec.OH, spec.OW


def train_step_flops(batch: int, resize: int = 224) -> int:
    """FLOPs of one training step of the seed AlexNet: forward + backward of every conv and linear."""
    return sum(s.flops("fwd+bwd") for s in alexnet_specs(batch, resize) if s.kind != "pool")
