"""numpy_ref.gradcheck: every op and every parameter of a small net pass; a wrong backward is caught and its worst
element named; `alexnet gradcheck` prints the table (one op with --op) and its exit status says whether all passed."""
from __future__ import annotations

import numpy as np
import pytest

from numpy_ref import functional as Fn
from numpy_ref.gradcheck import (
    check_backward, check_network, check_ops, numerical_gradient, rel_error, small_net, worst_element,
)
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


def test_one_op_alone(capsys):
    """`alexnet gradcheck --op conv2d` checks conv2d and nothing else, with the inputs (and errors) of the full run."""
    assert main(["gradcheck", "--op", "conv2d"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("pass") or line.endswith("FAIL")]
    assert rows and all(line.startswith("conv2d(") for line in rows), out
    assert "6/6 checks pass" in out
    alone = {(r.op, r.argument): r.error for r in check_ops(0, ops=["conv2d"])}
    everything = {(r.op, r.argument): r.error for r in check_ops(0)}
    assert alone == {k: v for k, v in everything.items() if k[0].startswith("conv2d")}
    assert main(["gradcheck", "--op", "network", "--op", "relu"]) == 0
    assert "9/9 checks pass" in capsys.readouterr().out                     # 8 parameters and relu's input
    with pytest.raises(SystemExit):
        main(["gradcheck", "--op", "conv3d"])
    assert "invalid choice: 'conv3d'" in capsys.readouterr().err


def test_a_failure_names_its_worst_element(capsys):
    assert main(["gradcheck", "--op", "relu", "--tol", "1e-30"]) == 1
    out = capsys.readouterr().out
    fail = out.splitlines().index(next(line for line in out.splitlines() if line.endswith("FAIL")))
    worst = out.splitlines()[fail + 1]
    assert worst.strip().startswith("worst at (") and "analytic" in worst and "numeric" in worst \
        and "relative error" in worst, out


def test_check_backward_reports_where_a_wrong_backward_is_wrong():
    rng = np.random.default_rng(0)

    def wrong_backward(dout, cache):
        dx = Fn.relu_backward(dout, cache)
        dx[1, 2] += 1.0                                                     # one element off
        return dx

    (result,) = check_backward("relu", Fn.relu_forward, wrong_backward, {"input": rng.standard_normal((3, 4))}, rng)
    assert result.index == (1, 2) and abs(result.analytic - result.numeric) == pytest.approx(1.0, abs=1e-6)


def test_numerical_gradient_takes_out_cache_and_refuses_other_tuples():
    x = np.random.default_rng(0).standard_normal((2, 3))
    dout = np.random.default_rng(1).standard_normal((2, 3))
    assert rel_error(numerical_gradient(Fn.relu_forward, x, dout), Fn.relu_backward(dout, Fn.relu_forward(x)[1])) < 1e-8
    with pytest.raises(ValueError, match=r"f returned a tuple \(ndarray, int, int\).*\(out, cache\) pair"):
        numerical_gradient(lambda v: (v, 1, 2), x)
    with pytest.raises(ValueError, match="return_indices"):
        numerical_gradient(lambda v: Fn.max_pool2d_forward(v[None], 2, return_indices=True), x)
    with pytest.raises(ValueError, match="f returned str"):
        numerical_gradient(lambda v: "out", x)
    with pytest.raises(ValueError, match=r"dout has shape \(3,\)"):
        numerical_gradient(Fn.relu_forward, x, np.ones(3))


def test_worst_element_and_nans():
    index, a, b, err = worst_element(np.array([[1.0, 2.0], [3.0, np.nan]]), np.array([[1.0, 2.5], [3.0, 4.0]]))
    assert index == (1, 1) and np.isnan(a) and b == 4.0 and err == np.inf
    assert worst_element(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))[3] == 0.0  # NaN on both sides agrees
