"""`alexnet explain`: the site's numbers are numpy_ref's and torch's, the page's derivations (conv outputs from
float64 sums and numpy_ref's float32 steps, ReLU by sign, pool by numpy_ref's argmax, a conv unit re-added from its
inputs and weights) give numpy_ref's values, the Triton view's block sizes are triton_kernels', and the server
traces an upload and refuses bad ones with a message.
(The page itself, in Chromium: test_explain_browser.py.)"""
from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import assert_close_verbose
from torch_model.cli import main as alexnet_main
from torch_model.data import load_split, to_input

from torch_model.explain import (EXACT, ExplainServer, MAX_UPLOAD_BYTES, conv_sum64, float_steps, from_steps,
                                 load_model, pack, pool_select, read_image, resize64, unpack)
from torch_model.model import alexnet

IMAGES = 3
pytestmark = pytest.mark.slow   # each module builds a 3-image site once (~15 s on 2 cores)


def torch_untrained(seed: int = 0) -> torch.nn.Module:
    """The weights --untrained --seed 0 explains, built here the way `alexnet train --seed 0` starts."""
    torch.manual_seed(seed)
    return alexnet(10).eval()


@pytest.fixture(scope="module")
def site(tmp_path_factory, real_data_dir):
    out = tmp_path_factory.mktemp("explain") / "site"
    assert alexnet_main(["explain", "--untrained", "--images", str(IMAGES), "--scan", "60", "--out", str(out),
                         "--data-dir", str(real_data_dir)]) == 0
    return out


@pytest.fixture(scope="module")
def test_split(real_data_dir):
    return load_split(real_data_dir, "test")


def site_json(site):
    return json.loads((site / "data" / "site.json").read_text())


def torch_forward(images_uint8: torch.Tensor) -> tuple[np.ndarray, dict]:
    """torch's logits for uint8 (N, 28, 28) images and every conv output (before its ReLU), float32."""
    net = torch_untrained()
    outs, x = {}, to_input(images_uint8)
    conv = 0
    with torch.no_grad():
        for layer in net:
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d):
                conv += 1
                outs[f"conv{conv}"] = x.numpy()
    return x.numpy(), outs


def test_site_holds_the_page_and_one_file_pair_per_image(site):
    s = site_json(site)
    for name in ("index.html", "main.js", "data.js", "draw.js", "arithmetic.js", "style.css"):
        assert (site / name).is_file(), name
    assert len(s["images"]) == IMAGES
    for k in range(IMAGES):
        assert (site / "data" / f"img-{k}.json").is_file() and (site / "data" / f"img-{k}.bin.gz").is_file()
    assert s["model"]["trained"] is False and "untrained" in s["model"]["label"]
    assert json.loads((site / "data" / "server.json").read_text()) == {"serve": False}
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html       # nothing loaded from the network


def test_probabilities_equal_torch_forward_on_the_same_weights(site, test_split):
    s = site_json(site)
    idx = [im["index"] for im in s["images"]]
    logits, _ = torch_forward(test_split.images[idx])
    want = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    for k in range(IMAGES):
        meta, _ = read_image(site, str(k))
        assert_close_verbose(np.array(meta["probs"]), want[k], atol=1e-5, rtol=0, what=f"image {k} probabilities")
        assert abs(sum(meta["probs"]) - 1) < 1e-12
        assert meta["pred"] == int(want[k].argmax()) and meta["label"] == int(test_split.labels[idx[k]])


def test_conv_outputs_rebuilt_from_the_site_are_numpy_refs_float32_and_close_to_torch(site, test_split):
    """Rebuilt from the stored steps (read_image, as the page does): bit for bit what numpy_ref's float32 forward
    gives; and within float32 rounding of torch's."""
    s = site_json(site)
    model = load_model(None, True, 0)
    _, a = read_image(site, "0")
    x = to_input(test_split.images[[s["images"][0]["index"]]]).numpy()
    assert np.array_equal(a["x"], x[0])
    h = x
    names = [layer["name"] for layer in s["layers"]]
    for name, layer in zip(names, model.net32):
        h = layer.forward(h)
        if name.startswith("conv"):
            assert a[name].dtype == np.float32 and np.array_equal(a[name].view(np.int32), h[0].view(np.int32)), name
    model.net32.clear_cache()
    _, touts = torch_forward(test_split.images[[s["images"][0]["index"]]])
    for name, t in touts.items():
        assert_close_verbose(a[name], t[0], atol=1e-5, rtol=1e-4, what=f"{name} vs torch", relative_to_max=True)


def test_pool_outputs_by_argmax_selection_equal_numpy_refs_max_pool(site):
    """The page's pool output (the ReLU output at numpy_ref's winner) is numpy_ref's max pool, exactly."""
    from numpy_ref import functional as Fn

    _, a = read_image(site, "1")
    for conv, pool in (("conv1", "pool1"), ("conv2", "pool2"), ("conv5", "pool5")):
        ref, _ = Fn.max_pool2d_forward(np.maximum(a[conv], 0)[None], 3, 2)
        assert np.array_equal(pool_select(a, conv, pool), ref[0]), pool


def conv_input(a: dict, layer: str) -> np.ndarray:
    """A conv layer's input as the page builds it from the stored arrays (selections only)."""
    return {"conv1": a["x"], "conv2": pool_select(a, "conv1", "pool1"), "conv3": pool_select(a, "conv2", "pool2"),
            "conv4": np.maximum(a["conv3"], 0), "conv5": np.maximum(a["conv4"], 0)}[layer]


def unit_sum(site, a: dict, layer: str, f: int, y: int, x: int) -> float:
    """The arithmetic view's sum, in float64 from the stored float32 inputs and weights."""
    s = site_json(site)
    geo = next(g for g in s["layers"] if g["name"] == layer)
    w = unpack((site / "data" / "weights.bin.gz").read_bytes(), s["weights"]["arrays"])
    inp = conv_input(a, layer).astype(np.float64)                        # (C, H, W)
    k, st, p = geo["kernel"], geo["stride"], geo["padding"]
    padded = np.pad(inp, ((0, 0), (p, p), (p, p)))
    window = padded[:, y * st:y * st + k, x * st:x * st + k]              # (C, k, k)
    return float((window * w[f"{layer}.weight"][f].astype(np.float64)).sum() + w[f"{layer}.bias"][f])


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "conv4", "conv5"])
def test_a_conv_units_sum_from_the_stored_inputs_equals_numpy_refs_value(site, layer):
    meta, a = read_image(site, "0")
    out = a[layer]
    rng = np.random.default_rng(0)
    units = [np.unravel_index(int(np.argmax(np.abs(out))), out.shape)]       # far from 0
    units += [tuple(int(rng.integers(0, n)) for n in out.shape) for _ in range(5)]
    for f, y, x in units:
        ref = float(out[f, y, x])
        got = unit_sum(site, a, layer, int(f), int(y), int(x))
        assert abs(got - ref) <= 1e-4 * abs(ref) + 1e-5, (layer, f, y, x, got, ref)
    d = meta["default_unit"]
    ref = float(a[d["layer"]][d["c"], d["y"], d["x"]])
    assert abs(unit_sum(site, a, d["layer"], d["c"], d["y"], d["x"]) - ref) <= 1e-4 * abs(ref)


def test_weight_gradients_equal_torch_autograd_and_finite_differences(site, test_split):
    s = site_json(site)
    meta, _ = read_image(site, "0")
    net = torch_untrained().double()
    x = to_input(test_split.images[[s["images"][0]["index"]]]).double()
    net(x)[0, meta["pred"]].backward()
    params = dict(net.named_parameters())
    torch_names = {"conv1": "0", "conv2": "3", "conv3": "6", "conv4": "8", "conv5": "10", "fc6": "14", "fc7": "17",
                   "fc8": "20"}
    assert [r["layer"] for r in meta["gradcheck"]] == list(torch_names)
    for r in meta["gradcheck"]:
        g = params[f"{torch_names[r['layer']]}.weight"].grad
        assert abs(g.abs().max().item() - abs(r["analytic"])) <= 1e-9 * abs(r["analytic"]), r   # the largest |grad|
        assert abs(g[tuple(r["index"])].item() - r["analytic"]) <= 1e-9 * abs(r["analytic"]), r
        assert r["rel_error"] < 1e-6, r                                   # float64 central differences agree


def test_stored_gradients_decode_to_torchs_within_the_int8_companding(site, test_split):
    """d score / d input and d score / d pool1 from the .bin, decoded as the page does, against torch autograd."""
    s = site_json(site)
    meta, a = read_image(site, "0")
    c = meta["pred"]
    net = torch_untrained().double()
    x = to_input(test_split.images[[s["images"][0]["index"]]]).double().requires_grad_(True)
    pool1 = net[:3](x)
    pool1.retain_grad()
    net[3:](pool1)[0, c].backward()
    for name, want in (("x", x.grad[0].numpy()), ("pool1", pool1.grad[0].numpy())):
        q, scale = a[f"grad{c}_{name}"], meta["backward"]["scales"][f"grad{c}_{name}"]
        got = np.sign(q) * (q / 127.0) ** 2 * scale
        assert abs(scale - np.abs(want).max()) <= 1e-6 * scale
        # |sqrt(|g|/scale) - |q|/127| <= 0.5/127, so |g - decoded| <= scale * (1/127 + 1/127^2)
        assert np.abs(got - want).max() <= scale * (1 / 127 + 1 / 127**2), name
    from torch_model.visualize import to_pixels
    assert_close_verbose(a[f"saliency{c}_28"], to_pixels(x.grad.numpy())[0], atol=1e-7, rtol=1e-4,
                         what="saliency on the 28x28 pixels", relative_to_max=True)


def test_fc_terms_add_up_to_numpy_refs_values(site):
    meta, _ = read_image(site, "2")
    sums = list(meta["fc"]["fc8"]) + list(meta["fc"]["fc7"].values()) + list(meta["fc"]["fc6"].values())
    assert len(meta["fc"]["fc8"]) == 10 and meta["fc"]["fc7"] and meta["fc"]["fc6"]
    for S in sums:
        total = sum(t["t"] for t in S["terms"]) + S["rest"] + S["bias"]
        assert abs(total - S["value"]) <= 1e-4 * max(1.0, abs(S["value"])), S["layer"]
        mags = [abs(t["t"]) for t in S["terms"]]
        assert mags == sorted(mags, reverse=True)
    for c, S in enumerate(meta["fc"]["fc8"]):
        assert abs(S["value"] - meta["logits"][c]) <= 1e-6 * max(1.0, abs(S["value"]))


def test_triton_view_takes_its_block_sizes_from_triton_kernels(site):
    from triton_kernels import conv as tconv

    tri = site_json(site)["triton"]
    keys = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
    assert tri["fwd"] == [{k: c[k] for k in keys} for c in tconv.SM90_FWD_CONFIGS]
    assert tri["fwd_small_c"] == [{k: c[k] for k in keys} for c in tconv.SM90_FWD_SMALL_C_CONFIGS]
    assert tri["interpret"] == {k: tconv.INTERPRET_CONFIG[k] for k in keys}
    assert tri["small_c_below"] == tconv.SMALL_C_BELOW


def test_conv_steps_rebuild_numpy_refs_values_in_another_summation_order(site):
    """The page adds a conv layer in its own order: the stored steps must give numpy_ref's float32 values from a
    float64 sum taken in an order other than the encoder's (here the input channels reversed)."""
    s = site_json(site)
    _, a = read_image(site, "0")
    w = unpack((site / "data" / "weights.bin.gz").read_bytes(), s["weights"]["arrays"])
    geo = next(g for g in s["layers"] if g["name"] == "conv2")
    inp, weight, bias = conv_input(a, "conv2"), w["conv2.weight"], w["conv2.bias"]
    ours = conv_sum64(inp, weight, bias, geo["stride"], geo["padding"])
    other = conv_sum64(inp[::-1].copy(), weight[:, ::-1].copy(), bias, geo["stride"], geo["padding"])
    assert (ours != other).any()                                   # the orders do round differently
    steps, exact = a["conv2_steps"], a["conv2_exact"]
    assert steps.dtype == np.int8 and 0 < exact.size < steps.size / 50
    got = from_steps(float_steps(other.astype(np.float32)) + steps)
    got[steps == EXACT] = exact
    assert np.array_equal(got.view(np.int32), a["conv2"].view(np.int32))


def test_the_pages_float64_resize_is_torchs_to_a_few_float32_steps(test_split):
    """resize64 (the page's bilinear resize, in float64) rounded to float32 lies within 4 float32 steps of torch's
    float32 resize (to_input) on 200 test images, so the input x costs one small int8 a pixel."""
    x = to_input(test_split.images[:200]).numpy()[:, 0]                           # (200, 224, 224)
    steps = np.stack([float_steps(x[i]) - float_steps(resize64(test_split.images[i].numpy())[0].astype(np.float32))
                      for i in range(len(x))])
    assert np.abs(steps).max() <= 4 and (steps == 0).mean() > 0.6              # torch rounds each of its ~6 ops


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_float_steps_count_float32_numbers_in_order(bits):
    a = np.array([bits], np.uint32).view(np.float32)
    assume(np.isfinite(a[0]))
    k = float_steps(a)
    assert np.array_equal(from_steps(k).view(np.uint32), a.view(np.uint32))
    up = from_steps(k + 1)[0]                                      # the next float32 number up
    if a[0] == 0 and np.signbit(a[0]):
        assert up == 0 and not np.signbit(up)                      # -0.0, then +0.0
    elif a[0] < np.finfo(np.float32).max:
        assert up == np.nextafter(a[0], np.float32(np.inf))


def test_pack_round_trips_every_dtype():
    rng = np.random.default_rng(0)
    arrays = {"f": rng.standard_normal((3, 4, 5)).astype(np.float32), "u": rng.integers(0, 255, 7).astype(np.uint8),
              "i": rng.integers(-127, 127, (2, 3)).astype(np.int8)}
    blob, index = pack(arrays)
    back = unpack(blob, index)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    with pytest.raises(ValueError, match="float64"):
        pack({"d": np.zeros(2)})


# ----------------------------------------------------------------------------------------------- the server

@pytest.fixture(scope="module")
def server(site):
    srv = ExplainServer(site, load_model(None, True, 0), 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def post(url: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/trace", data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="png")
    return buf.getvalue()


def test_server_traces_an_upload_like_a_test_image(server, site, test_split):
    with urllib.request.urlopen(server + "/data/server.json", timeout=10) as r:
        assert json.loads(r.read())["serve"] is True
    image = test_split.images[5].numpy()
    status, reply = post(server, png(image))
    assert status == 200 and reply["id"].startswith("u"), reply
    meta, a = read_image(site, reply["id"])
    assert np.array_equal(a["image"], image) and meta["label"] is None
    logits, _ = torch_forward(torch.from_numpy(image)[None])
    want = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()[0]
    assert_close_verbose(np.array(meta["probs"]), want, atol=1e-5, rtol=0, what="uploaded image's probabilities")
    assert reply["pred"] == meta["pred"] == int(want.argmax())


@pytest.mark.parametrize("body, status, message", [
    (b"this is not an image", 400, "not an image"),
    (b"", 400, "empty"),
    ("30x30", 400, "30x30 pixels"),
    ("big", 413, f"at most {MAX_UPLOAD_BYTES}"),
])
def test_server_refuses_bad_uploads_with_a_message(server, body, status, message):
    if body == "30x30":
        body = png(np.zeros((30, 30), np.uint8))
    elif body == "big":
        body = b"\0" * (MAX_UPLOAD_BYTES + 1)
    got, reply = post(server, body)
    assert got == status and message in reply["error"], reply


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert alexnet_main(["explain", "--untrained", "--images", "0", "--out", str(tmp_path)]) == 2
    assert "--images must be >= 1" in capsys.readouterr().err
    assert alexnet_main(["explain", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert alexnet_main(["explain", "--untrained", "--port", "9000", "--out", str(tmp_path)]) == 2
    assert "--port needs --serve" in capsys.readouterr().err


def post_json(url: str, obj) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/gradcheck", data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_checks_a_weight_of_the_users_choice(server, site, test_split):
    """POST /api/gradcheck: numpy_ref's analytic gradient of that weight equals torch autograd's, and the central
    difference agrees with it."""
    meta, _ = read_image(site, "0")
    status, row = post_json(server, {"image": "0", "layer": "conv3", "index": [5, 17, 1, 2]})
    assert status == 200, row
    net = torch_untrained().double()
    x = to_input(test_split.images[[site_json(site)["images"][0]["index"]]]).double()
    net(x)[0, meta["pred"]].backward()
    want = net[6].weight.grad[5, 17, 1, 2].item()
    assert row["layer"] == "conv3" and row["index"] == [5, 17, 1, 2]
    assert abs(row["analytic"] - want) <= 1e-9 * max(abs(want), 1e-12), (row, want)
    assert row["rel_error"] < 1e-5, row


@pytest.mark.parametrize("ask, message", [
    ({"image": "0", "layer": "relu1", "index": [0]}, "the layers with weights are conv1"),
    ({"image": "0", "layer": "fc8", "index": [10, 0]}, "fc8.weight has shape [10, 4096]"),
    ({"image": "0", "layer": "conv1", "index": [0, 0, 0]}, "4 integers"),
    ({"image": "99", "layer": "conv1", "index": [0, 0, 0, 0]}, "no such image"),
    ([1, 2], "a JSON object"),
])
def test_server_refuses_a_bad_weight_choice_with_a_message(server, ask, message):
    status, reply = post_json(server, ask)
    assert status == 400 and message in reply["error"], reply
