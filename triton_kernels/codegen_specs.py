"""What the H200 would compile: every kernel x autotune config x dtype (x layout) of conv.py, pool.py and lrn.py,
as the compile specs `python -m triton_kernels.codegen` builds for sm_90 on any machine (no GPU needed).

    SM90_COMPILE_SPECS = CONV_SPECS + POOL_SPECS + LRN_SPECS    # what the codegen tool reads from this module

A spec is a dict {"name", "fn" (the @triton.jit function, not the autotuner), "signature" (every argument:
"*fp32"-style pointer types, "i32", or "constexpr"), "constexprs", "num_warps", "num_stages"}, optionally
"attrs" (arguments the launcher would specialize as multiples of 16) and "expect_tensor_cores": True (the spec
fails when no wgmma/mma shows up). The compiler call is
triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32)).

Tooling, kept out of the op files: the kernels and their autotune configs are defined in conv.py, pool.py and
lrn.py; this file only enumerates them. (The lessons' specs are triton_kernels/lessons/specs.py, the tool's other
default module.)
"""
from __future__ import annotations

import triton.language as tl

from triton_kernels.conv import (
    BIAS_GRAD_CONFIG,
    FP64_CONFIG,
    SM90_DGRAD_CONFIGS,
    SM90_FWD_CONFIGS,
    SM90_FWD_SMALL_C_CONFIGS,
    SM90_WGRAD_CONFIGS,
    _conv2d_bias_grad_kernel,
    _conv2d_dgrad_kernel,
    _conv2d_fwd_kernel,
    _conv2d_wgrad_kernel,
)
from triton_kernels.lrn import _lrn_bwd_kernel, _lrn_fwd_kernel
from triton_kernels._common import ELEMENTWISE_GPU_CONFIGS
from triton_kernels.pool import _INDEX_KINDS, _max_pool2d_bwd_kernel, _max_pool2d_fwd_kernel


def _spec(name, fn, types, constexprs, num_warps, num_stages, unit=(), div16=(), tensor_cores=False) -> dict:
    """One spec: every argument typed (pointers, and any other non-i32 argument such as an fp32 scalar, as `types`
    gives them; the other non-constexpr arguments i32); `unit` arguments compiled as the constant 1 and `div16`
    ones as known multiples of 16, as Triton's launcher would specialize them for such values."""
    constexprs = {**constexprs, **{a: 1 for a in unit}}
    arg_names = list(fn.arg_names)
    signature = {a: "constexpr" if a in constexprs else types.get(a, "i32") for a in arg_names}
    spec = {"name": name, "fn": fn, "signature": signature, "constexprs": constexprs,
            "num_warps": num_warps, "num_stages": num_stages}
    if tensor_cores:
        spec["expect_tensor_cores"] = True  # the GEMMs must use wgmma / mma
    if div16:
        spec["attrs"] = {(arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    return spec


# ------------------------------------------------------------------------------------------------------------
# conv.py
# ------------------------------------------------------------------------------------------------------------

# (pointer dtype, fp32 dot precision) pairs that training on the H200 runs: fp32 with TF32 (torch's default for
# conv, cudnn.allow_tf32) and bf16 (--amp bf16). fp32 with "ieee" (exact tests) and fp16 are the same kernels with
# an FMA dot / another pointer type; they are left out to keep the CPU compile check short (each spec takes
# seconds to compile). float64 (gradient checks) has its own single config, FP64_CONFIG.
SM90_DTYPES = (("fp32", "tf32"), ("bf16", "ieee"))

# Layouts: "nchw" compiles every size and stride as a plain i32 (what any strides give); "cl" is what Triton's
# launcher specializes for channels_last tensors with channel counts divisible by 16 (AlexNet's conv2..conv5):
# unit channel strides become the constant 1, the other strides and the channel count are known multiples of 16,
# so the channel-contiguous tiles load as 16-byte async copies (LDGSTS.128) and multi-buffer in shared memory.
_CL_UNIT_STRIDES = {"fwd": ("stride_xc", "stride_wc", "stride_oc"),
                    "dgrad": ("stride_dyc", "stride_oc", "stride_wc", "stride_dxc")}
_CL_DIV16 = {
    "fwd": ("Cg", "stride_xn", "stride_xh", "stride_xw", "stride_wf", "stride_wh", "stride_ww",
            "stride_on", "stride_oh", "stride_ow"),
    "dgrad": ("Fg", "stride_dyn", "stride_dyh", "stride_dyw", "stride_on", "stride_oh", "stride_ow",
              "stride_wf", "stride_wh", "stride_ww", "stride_dxn", "stride_dxh", "stride_dxw"),
}


def _conv_spec(name, fn, pointers, constexprs, cfg, unit=(), div16=()) -> dict:
    """A conv spec named `name` + "BMxBNxBK-wW-sS]", the config's blocks compiled as constexprs."""
    blocks = {k: v for k, v in cfg.items() if k.startswith("BLOCK")}
    full = name + "x".join(str(v) for v in blocks.values()) + f"-w{cfg['num_warps']}-s{cfg['num_stages']}]"
    return _spec(full, fn, pointers, {**constexprs, **blocks}, cfg["num_warps"], cfg["num_stages"], unit, div16,
                 tensor_cores="DOT_PRECISION" in constexprs)


def _conv_specs() -> list[dict]:
    specs = []
    f32 = {"ACC_DTYPE": tl.float32}
    for dt, prec in SM90_DTYPES:
        tag = f"{dt}-{prec}" if dt == "fp32" else dt
        p = f"*{dt}"
        for layout in ("nchw", "cl"):
            cl = layout == "cl"
            for cfg in SM90_FWD_CONFIGS:
                specs.append(_conv_spec(
                    f"conv2d_fwd[{tag}, {layout}, ", _conv2d_fwd_kernel,
                    {"x_ptr": p, "w_ptr": p, "b_ptr": p, "out_ptr": p},
                    {"HAS_BIAS": True, "RELU": True, "SMALL_C": False, "DOT_PRECISION": prec, **f32}, cfg,
                    _CL_UNIT_STRIDES["fwd"] if cl else (), _CL_DIV16["fwd"] if cl else ()))
            for cfg in SM90_DGRAD_CONFIGS:
                specs.append(_conv_spec(
                    f"conv2d_dgrad[{tag}, {layout}, ", _conv2d_dgrad_kernel,
                    {"dy_ptr": p, "out_ptr": p, "w_ptr": p, "dx_ptr": p},
                    {"RELU": True, "DOT_PRECISION": prec, **f32}, cfg,
                    _CL_UNIT_STRIDES["dgrad"] if cl else (), _CL_DIV16["dgrad"] if cl else ()))
        for cfg in SM90_FWD_SMALL_C_CONFIGS:  # conv1: one input channel, both layouts are the same
            specs.append(_conv_spec(
                f"conv2d_fwd_small_c[{tag}, ", _conv2d_fwd_kernel,
                {"x_ptr": p, "w_ptr": p, "b_ptr": p, "out_ptr": p},
                {"HAS_BIAS": True, "RELU": True, "SMALL_C": True, "DOT_PRECISION": prec, **f32}, cfg))
        for cfg in SM90_WGRAD_CONFIGS:  # its K walk (n, oh, ow) and columns (kh, kw, c) gather in any layout
            # AlexNet's wgrads all split K (see conv._split_rows), so dW goes to the fp32 workspace.
            specs.append(_conv_spec(
                f"conv2d_wgrad[{tag}, ", _conv2d_wgrad_kernel,
                {"dy_ptr": p, "out_ptr": p, "x_ptr": p, "dw_ptr": "*fp32"},
                {"RELU": True, "DOT_PRECISION": prec, **f32}, cfg))
    for dt in dict.fromkeys(dt for dt, _ in SM90_DTYPES):  # bias grad: no dot, one spec per dtype
        specs.append(_conv_spec(
            f"conv2d_bias_grad[{dt}, ", _conv2d_bias_grad_kernel,
            {"dy_ptr": f"*{dt}", "out_ptr": f"*{dt}", "db_ptr": "*fp32"},  # split rows: fp32 partial sums
            {"RELU": True, **f32}, BIAS_GRAD_CONFIG))
        specs.append(_conv_spec(  # the same kernel summing split partials (conv._sum_partials) into dtype
            f"conv2d_bias_grad[partials->{dt}, ", _conv2d_bias_grad_kernel,
            {"dy_ptr": "*fp32", "out_ptr": "*fp32", "db_ptr": f"*{dt}"},
            {"RELU": False, **f32}, BIAS_GRAD_CONFIG))
    # float64 (gradient checks): FP64_CONFIG only, fp64 accumulators and workspaces.
    p64, f64 = "*fp64", {"DOT_PRECISION": "ieee", "ACC_DTYPE": tl.float64}
    for small_c in (False, True):
        specs.append(_conv_spec(
            f"conv2d_fwd{'_small_c' if small_c else ''}[fp64, ", _conv2d_fwd_kernel,
            {"x_ptr": p64, "w_ptr": p64, "b_ptr": p64, "out_ptr": p64},
            {"HAS_BIAS": True, "RELU": True, "SMALL_C": small_c, **f64}, FP64_CONFIG))
    specs.append(_conv_spec("conv2d_dgrad[fp64, ", _conv2d_dgrad_kernel,
                            {"dy_ptr": p64, "out_ptr": p64, "w_ptr": p64, "dx_ptr": p64},
                            {"RELU": True, **f64}, FP64_CONFIG))
    specs.append(_conv_spec("conv2d_wgrad[fp64, ", _conv2d_wgrad_kernel,
                            {"dy_ptr": p64, "out_ptr": p64, "x_ptr": p64, "dw_ptr": p64},
                            {"RELU": True, **f64}, FP64_CONFIG))
    for relu in (True, False):  # the bias grad, and the same kernel summing split partials
        specs.append(_conv_spec(f"conv2d_bias_grad[{'fp64' if relu else 'partials->fp64'}, ",
                                _conv2d_bias_grad_kernel, {"dy_ptr": p64, "out_ptr": p64, "db_ptr": p64},
                                {"RELU": relu, "ACC_DTYPE": tl.float64}, BIAS_GRAD_CONFIG))
    return specs


# ------------------------------------------------------------------------------------------------------------
# pool.py: every kernel x config x dtype x layout at AlexNet's pool (3x3, stride 2, no padding)
# ------------------------------------------------------------------------------------------------------------

_ALEXNET_POOL = {"KH": 3, "KW": 3, "SH": 2, "SW": 2, "PH": 0, "PW": 0, "DH": 1, "DW": 1}


def _pool_specs() -> list[dict]:
    specs = []
    for ty in ("fp32", "bf16", "fp16"):
        for channels_last in (False, True):
            layout = "nhwc" if channels_last else "nchw"
            for block, warps in ELEMENTWISE_GPU_CONFIGS:
                common = dict(_ALEXNET_POOL, CHANNELS_LAST=channels_last, INDEX_64=False)
                # forward in training (int8 taps for the backward) and under no_grad (no indices)
                for kind in ("taps", "none"):
                    idx_ty = "*i8" if kind == "taps" else f"*{ty}"  # "none": out stands in, never written
                    specs.append(_spec(
                        f"max_pool2d_fwd[{ty},{layout},{kind},BLOCK={block},w{warps}]", _max_pool2d_fwd_kernel,
                        {"x_ptr": f"*{ty}", "out_ptr": f"*{ty}", "idx_ptr": idx_ty},
                        dict(common, INDICES=_INDEX_KINDS[kind], BLOCK=block), warps, 1))
                specs.append(_spec(
                    f"max_pool2d_bwd[{ty},{layout},taps,BLOCK={block},w{warps}]", _max_pool2d_bwd_kernel,
                    {"grad_out_ptr": f"*{ty}", "idx_ptr": "*i8", "grad_x_ptr": f"*{ty}"},
                    dict(common, FLAT_INDICES=False, ACC_DTYPE=tl.float32, BLOCK=block), warps, 1))
    return specs


# ------------------------------------------------------------------------------------------------------------
# lrn.py: both kernels x config x dtype x layout at AlexNet's LRN (size 5, k > 0: the fast exp2/log2 power)
# ------------------------------------------------------------------------------------------------------------

ALEXNET_LRN_SIZE = 5


def _lrn_specs() -> list[dict]:
    specs = []
    for ty in ("fp32", "bf16", "fp16"):
        # "nchw": stride_c = H*W, a plain i32; "nhwc" (channels_last): stride_c == 1, which Triton's launcher
        # specializes to the constant 1 (so c = offs % C and the window's loads are contiguous).
        for layout in ("nchw", "nhwc"):
            for block, warps in ELEMENTWISE_GPU_CONFIGS:
                for which, fn, pointers, scalars in (
                        ("fwd", _lrn_fwd_kernel, ("x_ptr", "out_ptr"), ("alpha_n", "neg_beta", "k")),
                        ("bwd", _lrn_bwd_kernel, ("x_ptr", "dy_ptr", "dx_ptr"),
                         ("alpha_n", "neg_beta", "k", "coef"))):
                    types = {**{p: f"*{ty}" for p in pointers}, **{a: "fp32" for a in scalars}}
                    specs.append(_spec(
                        f"lrn_{which}[{ty},{layout},size={ALEXNET_LRN_SIZE},BLOCK={block},w{warps}]", fn, types,
                        {"SIZE": ALEXNET_LRN_SIZE, "GENERAL_POW": False, "INDEX_64": False, "ACC_DTYPE": tl.float32,
                         "BLOCK": block}, warps, 1, unit=("stride_c",) if layout == "nhwc" else ()))
    return specs


CONV_SPECS = _conv_specs()
POOL_SPECS = _pool_specs()
LRN_SPECS = _lrn_specs()
SM90_COMPILE_SPECS = CONV_SPECS + POOL_SPECS + LRN_SPECS
