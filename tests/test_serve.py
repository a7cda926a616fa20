"""serve.py: the JSON endpoint gives the API's scores, refuses bad requests in one line with a 4xx,
keeps concurrent requests apart, and the page works in a real headless Chromium (typed text, two
methods side by side, one coloured span per character)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, skip_or_fail

starlette = pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

import serve  # noqa: E402
from tig.ig import integrated_gradients  # noqa: E402
from tig.checkpoint import load_checkpoint  # noqa: E402

TEXT = "房间很干净，服务也好"


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoints):
    return load_checkpoint(tiny_checkpoints["cnn"])


@pytest.fixture(scope="module")
def client(ckpt):
    return TestClient(serve.make_app(serve.Explainer(ckpt)), base_url="http://127.0.0.1:8000")   # a Host it answers


def test_the_endpoint_gives_the_apis_scores(ckpt, client):
    reply = client.post("/explain", json={"text": TEXT, "method": "ig", "steps": 50})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    ids = ckpt.tokenizer.encode([TEXT], ckpt.maxlen)
    ig = integrated_gradients(ckpt.model, ids, steps=50)
    assert data["tokens"] == list(TEXT) and data["target"] == int(ig.target[0])
    np.testing.assert_allclose(data["scores"], ig.scores[0, :len(TEXT)], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(data["probabilities"], ig.probs[0], rtol=1e-6)
    assert data["delta"] == pytest.approx(float(ig.delta[0]), abs=1e-7) and data["steps"] == 50
    other = client.post("/explain", json={"text": TEXT, "method": "grad", "target": ckpt.classes[0]}).json()
    assert other["method"] == "gradxinput" and other["target"] == 0 and other["delta"] is None


def test_a_long_text_is_cut_as_the_command_line_cuts_it(ckpt, client):
    text = "房间很干净" * 40
    data = client.post("/explain", json={"text": text, "method": "ig", "steps": 8}).json()
    assert len(data["tokens"]) == ckpt.maxlen and data["truncated"] == len(text) - ckpt.maxlen


@pytest.mark.parametrize("body,status,message", [
    ({"text": "", "method": "ig"}, 400, "non-empty"),
    ({"text": "好", "method": "lime"}, 400, "unknown method"),
    ({"text": "好", "method": "ig", "target": "neutral"}, 422, "unknown target"),
    ({"text": "好", "method": "ig", "steps": 0}, 400, "'steps'"),
    ({"text": "好" * (serve.MAX_CHARS + 1), "method": "ig"}, 413, "at most"),
    (["not", "an", "object"], 400, "JSON object"),
])
def test_bad_requests_get_a_4xx_and_one_line(client, body, status, message):
    reply = client.post("/explain", json=body)
    assert reply.status_code == status and message in reply.json()["error"]
    assert "\n" not in reply.json()["error"]


def test_a_body_that_is_not_json_or_too_big_is_refused(client):
    headers = {"Content-Type": "application/json"}
    assert client.post("/explain", content=b"{not json", headers=headers).status_code == 400
    assert client.post("/explain", content=b"x" * (20 * serve.MAX_CHARS), headers=headers).status_code == 413


def test_concurrent_requests_do_not_mix(client):
    texts = ["房间很干净", "前台态度很差，不会再来", "早餐一般"]
    alone = [client.post("/explain", json={"text": t, "method": "ig", "steps": 16}).json() for t in texts]
    together = [None] * len(texts)

    def ask(i):
        together[i] = client.post("/explain", json={"text": texts[i], "method": "ig", "steps": 16}).json()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert together == alone


def test_the_page_escapes_class_names_and_loads_nothing_from_outside(client):
    page = serve.page_html(["<b>neg</b>", "pos&"])
    assert "<b>neg</b>" not in page and "&lt;b&gt;neg&lt;/b&gt;" in page and "pos&amp;" in page
    html = client.get("/").text
    assert "http://" not in html and "https://" not in html and "innerHTML" not in html
    assert client.get("/font.css").text.startswith("@font-face")


# --- the page in a real browser -----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint, log=None, env=None):
    """serve.py as a user starts it, on a free port; returns (process, url) once it accepts connections.
    Its stderr goes to a pipe, or to the file `log`; env replaces the environment (default: this one,
    TensorFlow's log quiet)."""
    port = free_port()
    stderr = subprocess.PIPE if log is None else open(log, "w")
    proc = subprocess.Popen([sys.executable, "serve.py", "--checkpoint", checkpoint, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env=env if env is not None else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if log is not None:
        stderr.close()   # the child holds its own copy
    for _ in range(240):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read() if log is None else open(log).read())
            time.sleep(0.5)
    proc.kill()
    pytest.fail("serve.py did not start listening within 2 minutes")


@pytest.fixture(scope="module")
def server(tiny_checkpoints):
    """A running serve.py, stopped with Ctrl-C (SIGINT) at the end. TIG_SCREENSHOT_CHECKPOINT serves a
    real checkpoint instead (for the README's screenshot)."""
    proc, url = start_server(os.environ.get("TIG_SCREENSHOT_CHECKPOINT") or tiny_checkpoints["cnn"])
    yield url, proc
    stop_server(proc)


def stop_server(proc):
    """Ctrl-C (SIGINT) as a user stops it; killed if it has not stopped within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ctrl_c_stops_the_server_cleanly(tiny_checkpoints):
    proc, _ = start_server(tiny_checkpoints["cnn"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 1) and "Traceback" not in err, err


def chromium():
    """A headless Chromium under selenium, talking to nothing but what a test opens (skipped, or failed
    in CI, where Chromium or its driver is missing)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        skip_or_fail("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,700"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def test_the_page_in_chromium_shows_two_methods_side_by_side(server):
    driver = chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    url, _ = server
    try:
        driver.get(url + "/")
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys("房间很干净，<b>服务</b>也好")
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "results").get_attribute("data-done"))
        panels = driver.find_elements(By.CSS_SELECTOR, "#results .method")
        assert [p.get_attribute("data-method") for p in panels] == ["ig", "gradxinput"]
        for panel in panels:
            units = panel.find_elements(By.CSS_SELECTOR, ".chars span")
            assert "".join(u.text for u in units) == "房间很干净，<b>服务</b>也好"   # escaped: shown, not parsed
            assert len(units) == len("房间很干净，<b>服务</b>也好")
            assert any(u.value_of_css_property("background-color") != "rgba(255, 255, 255, 1)" for u in units)
            assert all(u.get_attribute("title") for u in units)     # the score on hover
        assert panels[0].location["y"] == panels[1].location["y"] and panels[0].location["x"] < panels[1].location["x"]
        assert "completeness delta" in panels[0].text and "completeness delta" not in panels[1].text
        shot = os.environ.get("TIG_SCREENSHOT")
        if shot:
            driver.save_screenshot(shot)
    finally:
        driver.quit()
