"""What each lesson step compiles to on the H200 (sm_90), for the codegen tool (no GPU needed):

    python -m triton_kernels.codegen --module triton_kernels.lessons.specs   # only these; a plain run adds the ops'

SM90_COMPILE_SPECS: one dict per kernel configuration (the tool's format: name, fn, signature, constexprs,
num_warps, num_stages, optionally attrs and expect_tensor_cores), in bf16, the dtype the GPU timings use, each with
the launch configuration its step uses on a GPU. "facts" is what the step's docstring says about its compiled code;
tests/test_triton_lessons.py compiles every spec and checks them:
    tensor_cores  True: HGMMA (Hopper's warpgroup MMA) in the SASS; False: no HGMMA/HMMA at all
    shared        True: the kernel stages tiles in shared memory; False: it uses none
    spills        True: ptxas spilled registers to local memory (STL/LDL in the SASS); False: none, no stack
and, between steps: step 3 needs fewer registers than step 2, and channels_last fewer than NCHW with more
shared memory (its A and W tiles multi-buffered by cp.async, num_stages deep).
Measured with triton 3.9 (the CPU machines' version); the H200's triton 3.6 allocates registers differently.
"""
from __future__ import annotations

from triton_kernels.lessons import (
    step0_primer,
    step1_direct_conv,
    step2_implicit_gemm,
    step3_tap_walk,
    step4_backward,
    step4b_fused_backward,
    step5_pool_direct,
    step6_pool_argmax,
)

DTYPE = "bf16"


def _spec(name, fn, pointers, constexprs, num_warps, num_stages, facts, div16=()):
    """Every argument typed: pointers as given (`*bf16` unless said), constexprs as given, other arguments i32;
    `div16` arguments compiled as known multiples of 16 (what Triton's launcher sees for channel counts and strides
    of AlexNet's channels_last tensors)."""
    fn_args = list(fn.arg_names)
    signature = {a: "constexpr" if a in constexprs else pointers.get(a, f"*{DTYPE}") if a.endswith("_ptr") else "i32"
                 for a in fn_args}
    spec = {"name": name, "fn": fn, "signature": signature, "constexprs": dict(constexprs),
            "num_warps": num_warps, "num_stages": num_stages, "expect_tensor_cores": facts["tensor_cores"],
            "facts": facts}
    if div16:
        spec["attrs"] = {(fn_args.index(a),): [["tt.divisibility", 16]] for a in div16}
    return spec


def _blocks(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k.startswith("BLOCK")}


_GEMM = {"tensor_cores": True, "shared": True, "spills": False}
_GEMM_SPILLS = {"tensor_cores": True, "shared": True, "spills": True}  # per-element address tensors: > 255 regs
_PLAIN = {"tensor_cores": False, "shared": False, "spills": False}
_s2, _s4 = step2_implicit_gemm.GPU_CONFIG, step4_backward.GPU_CONFIG
_bm, _bn, _bk, _w3, _st3 = step3_tap_walk.GPU_CONFIGS[0]
_s3_blocks = {"BLOCK_M": _bm, "BLOCK_N": _bn, "BLOCK_K": _bk}
_s3_epilogue = {"HAS_BIAS": True, "RELU": True, "DOT_PRECISION": "ieee"}
# channels_last: the channel strides are 1 (Triton specializes them to the constant 1) and C, the other strides
# are multiples of 16 (AlexNet's conv2..conv5), so a chunk of channels is one aligned 16-byte vector per 8 lanes.
_CL_UNIT = {"stride_xc": 1, "stride_wc": 1, "stride_oc": 1}
_CL_DIV16 = ("C", "stride_xn", "stride_xh", "stride_xw", "stride_wf", "stride_wh", "stride_ww",
             "stride_on", "stride_oh", "stride_ow")

_s4b_d, _s4b_w = step4b_fused_backward.DGRAD_GPU_CONFIG, step4b_fused_backward.WGRAD_GPU_CONFIG


def _tile(cfg: dict) -> str:
    return f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}x{cfg['BLOCK_K']}, w{cfg['num_warps']}"


# step 4b in channels_last: dy, out, x, w, dx with unit channel (filter) strides, the way a channels_last
# training step hands them over.
_S4B_DGRAD_UNIT = {"stride_dyf": 1, "stride_of": 1, "stride_wc": 1, "stride_dxc": 1}
_S4B_WGRAD_UNIT = {"stride_dyf": 1, "stride_of": 1, "stride_xc": 1}

SM90_COMPILE_SPECS = [
    _spec(f"step0_primer[{DTYPE}, BLOCK={step0_primer.BLOCK}, w4]", step0_primer._relu_kernel,
          {}, {"BLOCK": step0_primer.BLOCK}, 4, 3, _PLAIN),
    _spec(f"step1_direct_conv[{DTYPE}, BLOCK={step1_direct_conv.BLOCK}, w4]", step1_direct_conv._conv2d_direct_kernel,
          {}, {"BLOCK": step1_direct_conv.BLOCK}, 4, 3, _PLAIN),
    _spec(f"step2_implicit_gemm[{DTYPE}, {_s2['BLOCK_M']}x{_s2['BLOCK_N']}x{_s2['BLOCK_K']}, w{_s2['num_warps']}]",
          step2_implicit_gemm._conv2d_igemm_kernel, {}, {"DOT_PRECISION": "ieee", **_blocks(_s2)},
          _s2["num_warps"], 3, _GEMM_SPILLS),
    _spec(f"step3_tap_walk[{DTYPE}, nchw, {_bm}x{_bn}x{_bk}, w{_w3}, s{_st3}]", step3_tap_walk._conv2d_tap_kernel,
          {}, {**_s3_epilogue, **_s3_blocks}, _w3, _st3, _GEMM),
    _spec(f"step3_tap_walk[{DTYPE}, channels_last, {_bm}x{_bn}x{_bk}, w{_w3}, s{_st3}]",
          step3_tap_walk._conv2d_tap_kernel, {}, {**_s3_epilogue, **_s3_blocks, **_CL_UNIT}, _w3, _st3, _GEMM,
          div16=_CL_DIV16),
    _spec(f"step4_backward.wgrad[{DTYPE}, {_s4['BLOCK_M']}x{_s4['BLOCK_N']}x{_s4['BLOCK_K']}, w{_s4['num_warps']}]",
          step4_backward._conv2d_wgrad_kernel, {}, {"DOT_PRECISION": "ieee", **_blocks(_s4)},
          _s4["num_warps"], 3, _GEMM_SPILLS),
    _spec(f"step4b_fused_backward.dgrad[{DTYPE}, channels_last, {_tile(_s4b_d)}]",
          step4b_fused_backward._conv2d_dgrad_gather_kernel, {},
          {"RELU": True, "DOT_PRECISION": "ieee", **_blocks(_s4b_d), **_S4B_DGRAD_UNIT},
          _s4b_d["num_warps"], _s4b_d["num_stages"], _GEMM),
    _spec(f"step4b_fused_backward.wgrad[{DTYPE}, channels_last, {_tile(_s4b_w)}, split-K]",
          step4b_fused_backward._conv2d_wgrad_split_k_kernel, {"part_ptr": "*fp32"},
          {"RELU": True, "DOT_PRECISION": "ieee", **_blocks(_s4b_w), **_S4B_WGRAD_UNIT},
          _s4b_w["num_warps"], _s4b_w["num_stages"], _GEMM),
    _spec(f"step5_pool_direct[{DTYPE}, BLOCK={step5_pool_direct.BLOCK}, w4]",
          step5_pool_direct._max_pool2d_direct_kernel, {}, {"BLOCK": step5_pool_direct.BLOCK}, 4, 3, _PLAIN),
    _spec(f"step6_pool_argmax.fwd[{DTYPE}, 3x3 s2, taps, BLOCK={step6_pool_argmax.BLOCK}, w4]",
          step6_pool_argmax._max_pool2d_fwd_kernel, {"tap_ptr": "*i8"},
          {"K": 3, "S": 2, "P": 0, "RECORD": True, "BLOCK": step6_pool_argmax.BLOCK}, 4, 3, _PLAIN),
    _spec(f"step6_pool_argmax.bwd[{DTYPE}, 3x3 s2, BLOCK={step6_pool_argmax.BLOCK}, w4]",
          step6_pool_argmax._max_pool2d_bwd_kernel, {"tap_ptr": "*i8"},
          {"K": 3, "S": 2, "P": 0, "BLOCK": step6_pool_argmax.BLOCK}, 4, 3, _PLAIN),
]
