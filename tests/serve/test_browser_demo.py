"""The browser demo in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium).

The page loads the session's tiny exported TFJS model from the local demo server and is fed real
photos through its file picker; its top-1 must equal the torch checkpoint's top-1 and every shown
confidence must match torch within 1e-3.

Fair comparison: the browser's canvas resize is not PIL's antialiased resize, so each real photo is
first put through the project's preprocessing contract in Python (load_rgb + eval_transform: EXIF,
RGB, antialiased resize to the model's image size) and saved as a lossless PNG at exactly that size.
The page then copies its pixels 1:1 (no resize happens), so browser and torch see the same numbers;
the test asserts that torch gives bit-identical input for the PNG and for the original photo, so the
reference really is the torch prediction for the real photo. A full-size photo is also fed once to
show the page's own resize path works (loose check only).

Needs: apt `chromium chromium-driver`, pip `selenium`, `npm ci` (TFJS from node_modules). Missing
pieces fail with the install command; set LIT_GARBAGE_SKIP_BROWSER=1 to skip on purpose.
The screenshot is kept as a test artefact (path printed; copied to $LIT_GARBAGE_ARTIFACTS if set).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_garbage.commands.serve import main as serve_main
from lit_garbage.data.images import load_rgb
from lit_garbage.data.transforms import eval_transform
from lit_garbage.inference.backends import load_backend
from lit_garbage.inference.node_runtime import install_hint, node_modules
from lit_garbage.serve.demo import DemoError, make_server, serve_in_thread
from tests.fixtures_export import CLASSES, IMAGE_SIZE

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LIT_GARBAGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LIT_GARBAGE_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium"

pytestmark = pytest.mark.timeout(600)


def _require_browser():
    if os.environ.get("LIT_GARBAGE_SKIP_BROWSER") == "1":
        pytest.skip("LIT_GARBAGE_SKIP_BROWSER=1")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(p))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        pytest.fail(f"browser test needs {', '.join(missing)}: {INSTALL}")
    assert (node_modules() / "@tensorflow" / "tfjs" / "dist" / "tf.min.js").is_file(), \
        f"node_modules is missing: {install_hint()}"


@pytest.fixture(scope="module")
def server(tiny_export):
    srv, url = serve_in_thread(tiny_export["out"])
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lit-garbage-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,860", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _body(driver, attr: str) -> str:
    return driver.execute_script(f"return document.body.dataset.{attr} || ''")


def _wait(driver, predicate, what: str, timeout: float = 90):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate())
    except Exception:
        status = driver.execute_script("return document.getElementById('status').textContent")
        logs = driver.get_log("browser")
        raise AssertionError(f"timed out waiting for {what}; page status: {status!r}; console: {logs}") from None


def _feed(driver, path: Path) -> list[tuple[str, float, float]]:
    """Pick a file in the page; (label, shown confidence, data-prob) of the top-3 rows."""
    from selenium.webdriver.common.by import By

    runs = int(_body(driver, "runs") or 0)
    driver.find_element(By.ID, "file-input").send_keys(str(path))
    _wait(driver, lambda: int(_body(driver, "runs") or 0) == runs + 1, f"the result for {path.name}")
    rows = []
    for li in driver.find_elements(By.CSS_SELECTOR, "#results li"):
        shown = li.find_element(By.CSS_SELECTOR, ".confidence").text
        match = re.fullmatch(r"(\d+\.\d\d) %", shown)
        assert match, f"confidence shown as {shown!r}"
        label = li.find_element(By.CSS_SELECTOR, ".label").text
        rows.append((label, float(match.group(1)) / 100, float(li.get_attribute("data-prob"))))
        assert label.lower() == li.get_attribute("data-label")
    return rows


def test_page_top3_matches_torch_on_real_photos_and_keeps_a_screenshot(tiny_export, server, browser, real_smoke,
                                                                       tmp_path):
    browser.get(server)
    _wait(browser, lambda: _body(browser, "state") in ("ready", "error"), "the model to load")
    assert _body(browser, "state") == "ready", browser.find_element("id", "status").text
    info = browser.find_element("id", "model-info").text
    assert f"{len(CLASSES)} classes" in info and f"{IMAGE_SIZE} px" in info
    assert "backend" in browser.find_element("id", "backend-info").text

    torch_model = load_backend(tiny_export["ckpt"])
    transform = eval_transform(IMAGE_SIZE)
    photos = [sorted((real_smoke / c).glob("*.jpg"))[0] for c in ("battery", "clothes", "glass")]
    for photo in photos:
        x = transform(load_rgb(photo)).numpy()
        png = tmp_path / f"{photo.stem}.png"
        Image.fromarray(np.round(x.transpose(1, 2, 0) * 255).astype(np.uint8), "RGB").save(png)
        x_png = transform(load_rgb(png)).numpy()
        assert np.array_equal(x_png, x), "the PNG carries exactly the contract's pixels"
        probs = torch_model.predict(x[None])[0]
        order = np.argsort(-probs, kind="stable")

        rows = _feed(browser, png)
        assert len(rows) == 3
        assert rows[0][0].lower() == CLASSES[order[0]], f"{photo.name}: page {rows} vs torch {probs}"
        for (label, shown, exact), j in zip(rows, order[:3]):
            assert label.lower() == CLASSES[j], (photo.name, rows, probs)
            assert abs(shown - probs[j]) <= 1e-3, (photo.name, label, shown, probs[j])
            assert abs(exact - probs[j]) <= 1e-4, (photo.name, label, exact, probs[j])

    # A full-size photo goes through the page's own resize (canvas, not PIL's antialias): the pixels
    # differ slightly, so the probabilities may move, but the decision must be torch's.
    big = sorted((real_smoke / "biological").glob("*.jpg"))[0]
    rows = _feed(browser, big)
    probs = torch_model.predict(transform(load_rgb(big)).numpy()[None])[0]
    assert len(rows) == 3 and sum(r[2] for r in rows) <= 1 + 1e-5
    assert rows[0][0].lower() == CLASSES[int(np.argmax(probs))], (big.name, rows, probs)

    shot = tmp_path / "browser_demo.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and np.asarray(im.convert("L")).std() > 5
    print(f"\nbrowser demo screenshot: {shot}")
    if os.environ.get("LIT_GARBAGE_ARTIFACTS"):
        dest = Path(os.environ["LIT_GARBAGE_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)
        print(f"copied to {dest / shot.name}")


def test_page_says_so_when_a_file_is_not_an_image_and_keeps_working(server, browser, real_smoke, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    _wait(browser, lambda: _body(browser, "state") == "ready", "the model to load")
    junk = tmp_path / "notes.jpg"
    junk.write_text("not a picture")
    browser.find_element(By.ID, "file-input").send_keys(str(junk))
    _wait(browser, lambda: _body(browser, "errors") == "1", "the error message")
    status = browser.find_element(By.ID, "status")
    assert "could not be read as an image" in status.text and "error" in status.get_attribute("class")
    rows = _feed(browser, sorted((real_smoke / "shoes").glob("*.jpg"))[0])
    assert len(rows) == 3 and _body(browser, "state") == "done"


def test_server_serves_only_the_demo_files(tiny_export, server):
    def get(path: str) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(server + path, timeout=10) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, b"", ""

    status, body, _ = get("")
    assert status == 200 and b"app.js" in body
    assert get("model/tfjs/model.json")[0] == 200
    assert get("model/labels.txt")[1].decode().split() == CLASSES
    status, _, ctype = get("vendor/tfjs-backend-wasm/tfjs-backend-wasm.wasm")
    assert status == 200 and ctype == "application/wasm"
    for path in ("model/model.onnx", "model/../model.ckpt", "model/tfjs/../../model.ckpt", "vendor/other/x.js",
                 "../pyproject.toml", "%2e%2e/pyproject.toml", "model/"):
        assert get(path)[0] == 404, path


def test_serve_command_explains_a_missing_tfjs_export(tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert serve_main(["--export", str(tmp_path)]) == 2
    assert "no tfjs/model.json" in capsys.readouterr().err
    with pytest.raises(DemoError, match="does not exist"):
        make_server(tmp_path / "missing")
