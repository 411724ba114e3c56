"""Step 0, the primer: Triton's whole vocabulary on a ReLU, before any convolution.

    out[i] = max(x[i], 0)          x and out: 1-D, TOTAL elements (any contiguous tensor, viewed flat)

Five ideas, each one line of the kernel below:
1. Programs. The launch `_relu_kernel[grid](...)` runs the kernel once per program; grid = (cdiv(TOTAL, BLOCK),)
   here, and `tl.program_id(0)` tells each program which one it is (0, 1, 2, ...). On a GPU they run in parallel,
   one per streaming multiprocessor slot; the interpreter runs them one after the other.
2. Blocks. A program works on a whole block of elements at once: `tl.arange(0, BLOCK)` is the vector
   0..BLOCK-1, so `offs` is this program's BLOCK element indices, and every expression on it is a (BLOCK,) vector.
3. Masks. TOTAL is rarely a multiple of BLOCK: the last program's block runs past the end. `mask = offs < TOTAL`
   turns those lanes off: a masked load reads `other` there instead of memory, a masked store writes nothing.
   Forget the mask and the last program reads and writes past the tensor (on a GPU: garbage or a crash).
4. constexpr. BLOCK is a `tl.constexpr`: a compile-time constant, one compiled kernel per value (the shapes of
   `tl.arange` and of every block must be known when compiling, and be powers of two). TOTAL is an ordinary
   argument: one compiled kernel serves every length.
5. Pointers. `x_ptr + offs` is a vector of addresses (a torch tensor argument arrives as the address of its first
   element, typed by its dtype); `tl.load`/`tl.store` move a block between memory and registers.

The interpreter (on a CPU, TRITON_INTERPRET=1, which `import triton_kernels` sets): the kernel is plain Python,
every `tl.*` value a Triton tensor whose data is a NumPy array at `.handle.data`. Step through it in pdb, with
the line number found by grep (it moves as the file changes):

    LINE=$(grep -n "tl.store(out_ptr + offs" triton_kernels/lessons/step0_primer.py | cut -d: -f1)
    python -m pdb -c "b triton_kernels/lessons/step0_primer.py:$LINE" -c c -m triton_kernels.lessons.step0_primer

then `p offs.handle.data`, `p mask.handle.data`, `p tl.program_id(0)`... (`c` goes on to the next program,
`q` quits). The self-check's first call has one element: offs is 0..255, mask is True only at 0.

Exercise (`python -m numpy_ref.exercises start triton_masked_load`): write this kernel's body yourself; `check`
runs it in the interpreter on lengths that are not multiples of BLOCK.

sm_90 codegen (specs.py): no tensor cores, no shared memory, no spills: one vectorised load, a max, one store.
Changing BLOCK (or num_warps) here? Rerun `python -m triton_kernels.codegen --module triton_kernels.lessons.specs`
to see what the new configuration compiles to on sm_90, and `python -m triton_kernels.lessons.step0_primer`.

Next (step 1): the same block-and-mask pattern on a convolution's output pixels.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from triton_kernels.lessons.harness import main

KIND, PASSES = "elementwise", ("fwd",)
BLOCK = 256  # elements per program: 4 warps x 32 lanes x 2 elements; a power of two (tl.arange needs one)


# out[i] = max(x[i], 0), NaN stays NaN (as torch.relu)
@triton.jit
def _relu_kernel(
    x_ptr, out_ptr,  # pointers: x (TOTAL,), out (TOTAL,)
    TOTAL,  # size: an ordinary argument, any value
    BLOCK: tl.constexpr,  # a compile-time constant: one compiled kernel per BLOCK
):
    pid = tl.program_id(0)  # which program this is: 0 .. cdiv(TOTAL, BLOCK) - 1
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) the element indices this program owns
    mask = offs < TOTAL  # (BLOCK,) False past the end: the last block is partial
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)  # (BLOCK,) masked lanes read 0.0, never memory
    out = tl.where(x < 0.0, 0.0, x)  # (BLOCK,) max(x, 0) that keeps NaN (NaN < 0 is False)
    tl.store(out_ptr + offs, out, mask=mask)  # masked lanes write nothing


def relu(x: torch.Tensor) -> torch.Tensor:
    """torch.relu(x) for a contiguous float tensor of any shape (viewed flat: a ReLU does not care about shape)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    x = x.contiguous()
    out = torch.empty_like(x)  # like x
    total = x.numel()
    grid = (triton.cdiv(total, BLOCK),)  # one program per block of BLOCK elements
    _relu_kernel[grid](
        x, out,
        total,
        BLOCK=BLOCK,
    )
    return out


if __name__ == "__main__":
    sys.exit(main("step0_primer"))
