"""From a 12-line ReLU kernel to triton_kernels/conv.py, one small step at a time (docs/triton_lessons.md).

    step0_primer           Triton's vocabulary on a ReLU: program ids, blocks, masks, constexpr, the interpreter
    step1_direct_conv      direct convolution: a block of output pixels of one filter, loops over (c, kh, kw), FMAs
    step2_implicit_gemm    the same sum as an implicit GEMM: tiles of (N*OH*OW pixels) x (F filters), tl.dot over
                           K = C*KH*KW
    step3_tap_walk         K walked tap by tap, any strides (channels_last loads coalesce), bias+ReLU epilogue,
                           autotuned tiles: where triton_kernels/conv.py starts
    step4_backward         dgrad as the convolution of dY with the flipped, transposed weights (step 2's kernel),
                           wgrad as a GEMM over N*OH*OW
    step4b_fused_backward  the bridge to conv.py's backward: dgrad gathered tap by tap (no dilated zeros, no flipped
                           copy), wgrad split over K, the ReLU mask applied as dY is loaded
    step5_pool_direct      max pooling: one lane per output, a loop over the window
    step6_pool_argmax      the production pool: a 1-byte argmax record and a gather backward (no atomics)

Each conv step exposes `conv2d(x, weight, bias=None, stride=1, padding=0, relu=False)`, each pool step
`max_pool2d(x, kernel_size, stride=None, padding=0)`, the primer `relu(x)`; each checks itself against torch (on
AlexNet's layer hyper-parameters for the convs and pools): `python -m triton_kernels.lessons.step1_direct_conv`
(on a GPU it also times itself against cuDNN and the previous step). `alexnet bench lessons` times every conv and
pool step on every layer; specs.py lists what `python -m triton_kernels.codegen --module
triton_kernels.lessons.specs` compiles for sm_90.
"""

PRIMER_STEPS = ("step0_primer",)
CONV_STEPS = ("step1_direct_conv", "step2_implicit_gemm", "step3_tap_walk", "step4_backward", "step4b_fused_backward")
POOL_STEPS = ("step5_pool_direct", "step6_pool_argmax")
STEPS = PRIMER_STEPS + CONV_STEPS + POOL_STEPS
# (kind, pass) -> the steps in the order a reader walks them, then the production op they lead to; a step is timed
# against the one before it in its chain ("x previous") and against eager torch.
CHAINS = {
    ("conv", "fwd"): ("step1_direct_conv", "step2_implicit_gemm", "step3_tap_walk", "production"),
    ("conv", "fwd+bwd"): ("step4_backward", "step4b_fused_backward", "production"),
    ("pool", "fwd"): ("step5_pool_direct", "step6_pool_argmax", "production"),
    ("pool", "fwd+bwd"): ("step6_pool_argmax", "production"),
}
