"""The explainer page in a real browser: Debian's chromium driven by selenium through Debian's chromedriver (given
by path, so nothing tries to download a driver). Without them the tests skip with the reason; under CI (CI=true)
a missing browser is a failure. scripts/setup.sh installs them where it can (root + apt-get).

The page's testing hooks: index.html?image=N, <body data-ready="1"> once rendered, #probabilities > [data-class]
[data-p], #conv-arithmetic[data-value][data-reference] (the page's sum, numpy_ref's value)."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_model.cli import main as alexnet_main
from torch_model.data import load_split, to_input
from torch_model.explain import ExplainServer, load_model, read_image

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
IMAGES = 3
pytestmark = pytest.mark.slow   # each module builds a 3-image site once (~15 s on 2 cores)
TIMEOUT = 60      # seconds for the page to reach a state (loading 15 MB of weights, a server-side trace)


def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in the project's test extras)"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (Debian: apt-get install chromium chromium-driver; scripts/setup.sh)"
    return None


@pytest.fixture(scope="module")
def driver():
    reason = browser_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory, real_data_dir):
    out = tmp_path_factory.mktemp("explain_browser") / "site"
    assert alexnet_main(["explain", "--untrained", "--images", str(IMAGES), "--scan", "60", "--out", str(out),
                         "--data-dir", str(real_data_dir)]) == 0
    return out


def serve(server: http.server.HTTPServer):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def static_url(site):
    """The site as plain files, as `python -m http.server` serves it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    yield serve(srv)
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def explain_url(site, tmp_path_factory):
    """The same site behind `alexnet explain --serve`'s server (a copy: uploads write into it)."""
    copy = tmp_path_factory.mktemp("served") / "site"
    shutil.copytree(site, copy)
    srv = ExplainServer(copy, load_model(None, True, 0), 0)
    yield serve(srv), copy
    srv.shutdown()
    srv.server_close()


def wait_ready(driver, url: str):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, TIMEOUT)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1"
               or d.execute_script("return !document.getElementById('error').hidden"))
    error = driver.execute_script("return document.getElementById('error').hidden ? '' : "
                                  "document.getElementById('error').textContent")
    assert not error, error


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def arithmetic(driver) -> tuple[float, float, str]:
    box = driver.find_element("id", "conv-arithmetic")
    return float(box.get_attribute("data-value")), float(box.get_attribute("data-reference")), \
        box.get_attribute("data-layer")


def probabilities(driver) -> np.ndarray:
    rows = driver.find_elements("css selector", "#probabilities [data-class]")
    return np.array([float(r.get_attribute("data-p")) for r in sorted(rows, key=lambda r: int(r.get_attribute("data-class")))])


def torch_probs(images_uint8: torch.Tensor) -> np.ndarray:
    from torch_model.model import alexnet

    torch.manual_seed(0)                       # --untrained --seed 0: the weights `alexnet train --seed 0` starts from
    net = alexnet(10).eval()
    with torch.no_grad():
        return torch.softmax(net(to_input(images_uint8)).double(), 1).numpy()


def test_page_loads_without_console_errors_and_matches_numpy_ref_and_torch(driver, static_url, site, real_data_dir):
    """The acceptance check: index.html?image=1 served as static files reaches data-ready, 10 probabilities summing
    to 1 that equal torch's forward, and the arithmetic view's sum equals numpy_ref's value to 1e-4 relative."""
    driver.get_log("browser")                  # start from an empty log
    wait_ready(driver, static_url + "/index.html?image=1")
    assert console_errors(driver) == []
    p = probabilities(driver)
    assert len(p) == 10 and abs(p.sum() - 1) < 1e-9
    test = load_split(real_data_dir, "test")
    meta, _ = read_image(site, "1")
    index = int(meta["source"].split("#")[1])
    np.testing.assert_allclose(p, torch_probs(test.images[[index]])[0], atol=1e-5, rtol=0)
    value, reference, layer = arithmetic(driver)
    assert layer == meta["default_unit"]["layer"]
    assert abs(value - reference) <= 1e-4 * abs(reference), (value, reference)
    banner = driver.find_element("id", "model-label").text
    assert "UNTRAINED" in banner


def test_every_view_renders(driver, static_url):
    wait_ready(driver, static_url + "/index.html?image=0")
    for section in ("overview", "arithmetic", "layers", "backward", "triton", "confusion", "draw"):
        assert driver.execute_script(f"return document.getElementById('{section}').dataset.rendered") == "1", section
    assert len(driver.find_elements("css selector", "#maps canvas")) == 18
    assert driver.find_elements("css selector", "#backward-view canvas")
    assert len(driver.find_elements("css selector", "#gradcheck-view tr")) == 9          # header + 8 layers
    assert len(driver.find_elements("css selector", "#triton-view table.ksteps tr")) > 2
    assert len(driver.find_elements("css selector", "#pool-view td.winner")) == 1
    assert len(driver.find_elements("css selector", "#confusion-view table.confusion td")) == 100
    assert "--serve" in driver.find_element("id", "upload-message").text               # static: no uploads
    # the backward slider walks every stage from the score to the input without an error
    n = int(driver.execute_script("return document.querySelector('#backward-view input[type=range]').max"))
    for k in range(n + 1):
        driver.execute_script(f"const s = document.querySelector('#backward-view input[type=range]');"
                              f"s.value = {k}; s.dispatchEvent(new Event('input'));")
    assert console_errors(driver) == []


def test_the_page_rebuilds_every_conv_output_bit_for_bit(driver, static_url, site, real_data_dir):
    """The page resizes the image and sums each conv layer in float64, and steps them to numpy_ref's float32
    values: the input x and every unit of every conv layer, compared as bits (SHA-256 of the float32 bytes) with
    torch's resize and numpy_ref's own forward of the image."""
    import hashlib

    wait_ready(driver, static_url + "/index.html?image=0")
    got = driver.execute_script("""return (async () => {
        const out = {};
        for (const name of ["x", "conv1", "conv2", "conv3", "conv4", "conv5"]) {
          const d = await crypto.subtle.digest("SHA-256", window.explainer.acts[name].data);
          out[name] = Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
        }
        return out;
    })();""")
    meta, _ = read_image(site, "0")
    x = to_input(load_split(real_data_dir, "test").images[[int(meta["source"].split("#")[1])]]).numpy()
    model, h = load_model(None, True, 0), x
    want = {"x": hashlib.sha256(np.ascontiguousarray(x[0], "<f4").tobytes()).hexdigest()}
    for g, layer in zip(json.loads((site / "data" / "site.json").read_text())["layers"], model.net32):
        h = layer.forward(h)
        if g["kind"] == "Conv2d":
            want[g["name"]] = hashlib.sha256(np.ascontiguousarray(h[0], "<f4").tobytes()).hexdigest()
    model.net32.clear_cache()
    assert got == want


@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5"])
def test_a_clicked_conv_unit_sums_to_numpy_refs_value(driver, static_url, site, layer):
    wait_ready(driver, static_url + "/index.html?image=2")
    canvas = driver.find_element("css selector", f"canvas[data-layer={layer}]")
    from selenium.webdriver.common.action_chains import ActionChains

    # a point inside the first channel's map, away from the gaps; centred in the window, clear of the sticky header
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    size = canvas.size
    ActionChains(driver).move_to_element_with_offset(canvas, -size["width"] // 2 + 3 + size["width"] // 40,
                                                     -size["height"] // 2 + 4).click().perform()
    value, reference, got_layer = arithmetic(driver)
    assert got_layer == layer
    unit = driver.execute_script("const u = document.getElementById('unit-c'); return [u.value, "
                                 "document.getElementById('unit-y').value, document.getElementById('unit-x').value]")
    f, y, x = map(int, unit)
    _, a = read_image(site, "2")
    assert reference == float(a[layer][f, y, x])                 # numpy_ref's float32 value, as stored
    assert abs(value - reference) <= 1e-4 * abs(reference) + 1e-6, (layer, f, y, x, value, reference)
    assert console_errors(driver) == []


def test_a_drawn_image_round_trips_through_the_server(driver, explain_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    url, copy = explain_url
    wait_ready(driver, url + "/index.html?image=0")
    canvas = driver.find_element("id", "draw-canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(driver).move_to_element_with_offset(canvas, -60, -80).click_and_hold() \
        .move_by_offset(100, 40).move_by_offset(-20, 90).release().perform()
    driver.find_element("id", "draw-send").click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: "image=u" in d.current_url
                                         and d.execute_script("return document.body.dataset.ready") == "1")
    image_id = driver.current_url.split("image=")[1]
    meta, a = read_image(copy, image_id)
    assert a["image"].max() > 100 and meta["source"] == "drawn or uploaded"          # the strokes arrived
    p = probabilities(driver)
    np.testing.assert_allclose(p, torch_probs(torch.from_numpy(a["image"].copy())[None])[0], atol=1e-5, rtol=0)
    value, reference, _ = arithmetic(driver)
    assert abs(value - reference) <= 1e-4 * abs(reference)


def _png(shape) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"plain text, not a picture", "not an image"),
    ("30x30", "30x30 pixels"),
    ("big", "at most"),
])
def test_bad_uploads_get_the_message_on_the_page(driver, explain_url, tmp_path, content, message):
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = explain_url
    wait_ready(driver, url + "/index.html?image=0")
    if content == "30x30":
        content = _png((30, 30))
    elif content == "big":
        content = b"\0" * (2 << 20)
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    driver.find_element("id", "upload-file").send_keys(str(path))
    driver.find_element("id", "upload-send").click()
    WebDriverWait(driver, TIMEOUT).until(
        lambda d: d.find_element("id", "upload-message").get_attribute("data-state") == "error")
    assert message in driver.find_element("id", "upload-message").text
