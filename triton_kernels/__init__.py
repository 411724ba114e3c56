"""triton_kernels: Triton kernels for AlexNet's hot path, registered as PyTorch ops with autograd.

    conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False)
    conv2d_relu(...)            # the same with the ReLU fused into the epilogue
    max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)
    local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0)     # the paper network's LRN

On a machine without CUDA every kernel runs in the Triton interpreter on CPU tensors: TRITON_INTERPRET=1 is set
by triton_kernels._common, imported first, before any @triton.jit runs (the decorator picks the interpreted
function at definition time), so a learner can step through a kernel in pdb. Set TRITON_INTERPRET=0 yourself to
opt out. bfloat16 is refused there (the interpreter computes it wrongly); float32, float16 and float64 work.
"""
from triton_kernels._common import INTERPRET  # first: sets TRITON_INTERPRET before triton is imported
from triton_kernels.conv import conv2d, conv2d_relu  # noqa: E402
from triton_kernels.lrn import local_response_norm  # noqa: E402
from triton_kernels.pool import max_pool2d  # noqa: E402

__all__ = ["conv2d", "conv2d_relu", "max_pool2d", "local_response_norm", "INTERPRET"]
