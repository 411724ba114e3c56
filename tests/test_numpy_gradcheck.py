"""numpy_ref.gradcheck: every op and every parameter of a small net pass; a wrong backward is caught;
`alexnet gradcheck` prints the table and its exit status says whether all passed."""
from __future__ import annotations

import numpy as np
import pytest

from numpy_ref import functional as Fn
from numpy_ref.gradcheck import check_network, check_ops, numerical_gradient, rel_error, small_net
from numpy_ref.layers import LocalResponseNorm
from torch_model.cli import main


def test_rel_error_is_the_cs231n_formula():
    a, b = np.array([1.0, 0.0, -2.0]), np.array([1.5, 0.0, -2.0])
    assert rel_error(a, b) == pytest.approx(0.5 / 2.5)
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-12 / 1e-8)  # the 1e-8 floor
    with pytest.raises(ValueError, match="shapes"):
        rel_error(np.ones(2), np.ones(3))


def test_numerical_gradient_of_a_known_function():
    x = np.random.default_rng(0).standard_normal((3, 4))                    # (3, 4)
    dout = np.random.default_rng(1).standard_normal((3, 4))
    grad = numerical_gradient(lambda v: v ** 3, x, dout)                    # d/dx sum(x^3 * dout) = 3x^2 dout
    assert rel_error(grad, 3 * x ** 2 * dout) < 1e-8
    assert x.flags.c_contiguous and np.isfinite(x).all()                    # restored after the perturbations
    with pytest.raises(ValueError, match="float64"):
        numerical_gradient(lambda v: v, x.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_every_op_and_parameter_passes(seed):
    results = check_ops(seed) + check_network(seed)
    ops = {r.op.split("(")[0] for r in results}
    assert ops == {"conv2d", "max_pool2d", "local_response_norm", "relu", "linear", "dropout", "flatten",
                   "cross_entropy", "small net"}
    assert {r.op for r in results if r.op.startswith("cross_entropy")} == {
        f"cross_entropy(reduction={red!r})" for red in ("mean", "sum", "none")}
    assert len([r for r in results if r.op == "small net"]) == 8                # 4 layers with weight and bias
    assert any(isinstance(layer, LocalResponseNorm) for layer in small_net(np.random.default_rng(0)))
    worst = max(results, key=lambda r: r.error)
    assert worst.error < 1e-5, f"worst: {worst}"


def test_a_wrong_backward_is_caught():
    """Drop the transpose in linear's dweight (a classic bug): the check must see it."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))         # square, so shapes still fit
    out, cache = Fn.linear_forward(x, w)
    dout = rng.standard_normal(out.shape)
    wrong = x.T @ dout                                                      # should be dout.T @ x
    numeric = numerical_gradient(lambda v: Fn.linear_forward(x, v)[0], w, dout)
    assert rel_error(Fn.linear_backward(dout, cache)[1], numeric) < 1e-7
    assert rel_error(wrong, numeric) > 1e-2


def test_cli_prints_the_table(capsys):
    assert main(["gradcheck", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "max rel error" in out and "FAIL" not in out and "26/26 checks pass" in out
    assert main(["gradcheck", "--tol", "1e-30"]) == 1  # no finite-difference estimate is that exact
    assert "FAIL" in capsys.readouterr().out
    assert main(["gradcheck", "--h", "0"]) == 2
    assert "--h" in capsys.readouterr().err


def test_relu_kink_gives_a_large_error():
    """The warning in the module docstring and docs, shown: a correct relu backward, one input at h/2 from
    the kink, and the centred difference is off by a relative 0.25/1.75; the same input 1 away is exact."""
    h = 1e-5
    x = np.array([h / 2, 1.0, -1.0])                                        # (3,)
    _, cache = Fn.relu_forward(x)
    analytic = Fn.relu_backward(np.ones(3), cache)                          # [1, 1, 0]
    numeric = numerical_gradient(lambda v: Fn.relu_forward(v)[0], x, 1.0, h)
    assert numeric[0] == pytest.approx(0.75)                                # ((h/2 + h) - 0) / (2h)
    assert rel_error(analytic[:1], numeric[:1]) == pytest.approx(0.25 / 1.75)
    assert rel_error(analytic[1:], numeric[1:]) < 1e-9
