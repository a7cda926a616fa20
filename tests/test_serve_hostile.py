"""serve.py facing hostile requests (issue 39): only JSON bodies, from this server's own page or an
allowed origin, to a Host naming this server; bodies capped while they stream in; deep JSON, lone
surrogates, empty-once-cleaned texts and clients gone mid-body answered or logged in one line; no CUDA
noise at start-up; the font built outside the explanation lock; and, in a real headless Chromium, another
site's page refused and a server error shown on the page as an error. Loopback only; every wait bounded."""
import asyncio
import http.server
import json
import os
import select
import socket
import threading
import time

import pytest

starlette = pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

import serve  # noqa: E402
from test_serve import chromium, free_port, start_server, stop_server  # noqa: E402
from tig import server as guard  # noqa: E402
from tig.checkpoint import load_checkpoint  # noqa: E402

BASE = "http://127.0.0.1:8000"
TEXT = "房间很干净，服务也好"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoints):
    return load_checkpoint(tiny_checkpoints["cnn"])


@pytest.fixture(scope="module")
def explainer(ckpt):
    return serve.Explainer(ckpt)


@pytest.fixture(scope="module")
def client(explainer):
    return TestClient(serve.make_app(explainer), base_url=BASE)


def one_line_error(reply, status, *words):
    assert reply.status_code == status, (reply.status_code, reply.text)
    error = reply.json()["error"]
    assert "\n" not in error and all(w in error for w in words), error
    return error


# --- a page on another site must not drive the server -------------------------------------------

@pytest.mark.parametrize("headers,content", [
    ({"Content-Type": "text/plain"}, json.dumps({"text": TEXT, "method": "ig"})),            # fetch's simple request
    ({"Content-Type": "application/x-www-form-urlencoded"}, '{"text":"房间很干净","method":"ig","x":"="}'),  # a form
    ({}, json.dumps({"text": TEXT, "method": "ig"})),
    ({"Content-Type": "application/jsonx"}, json.dumps({"text": TEXT, "method": "ig"})),
])
def test_only_application_json_bodies_are_read(client, headers, content):
    one_line_error(client.post("/explain", content=content.encode(), headers=headers), 415, "application/json")


def test_json_with_a_charset_is_read(client):
    reply = client.post("/explain", content=json.dumps({"text": TEXT, "method": "grad"}).encode(),
                        headers={"Content-Type": "application/json; charset=UTF-8"})
    assert reply.status_code == 200 and reply.json()["tokens"] == list(TEXT)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:8001", "http://localhost:8000",
                                    "https://127.0.0.1:8000"])
def test_a_request_from_another_origin_is_refused(client, origin):
    for headers in ({"Origin": origin, "Content-Type": "text/plain"}, {"Origin": origin, **JSON}):
        one_line_error(client.post("/explain", json={"text": TEXT, "method": "ig"}, headers=headers), 403, "origin")
    assert client.get("/", headers={"Origin": origin}).status_code == 403
    preflight = client.options("/explain", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_the_servers_own_page_and_an_allowed_origin_are_answered(explainer, client):
    reply = client.post("/explain", json={"text": TEXT, "method": "grad"}, headers={"Origin": BASE})
    assert reply.status_code == 200 and reply.json()["tokens"] == list(TEXT)
    allowed = TestClient(serve.make_app(explainer, allow_origins=["http://localhost:3000"]), base_url=BASE)
    preflight = allowed.options("/explain", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    reply = allowed.post("/explain", json={"text": TEXT, "method": "grad"}, headers={"Origin": "http://localhost:3000"})
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert allowed.post("/explain", json={"text": TEXT}, headers={"Origin": "http://evil.example"}).status_code == 403


def test_allow_origin_takes_origins_and_allow_host_names():
    assert serve.parse_args(["--allow-origin", "http://LocalHost:3000/", "--allow-origin", "https://a.example"]
                            ).allow_origin == ["http://localhost:3000", "https://a.example"]
    assert serve.parse_args(["--allow-host", "192.168.1.5", "--allow-host", "Box.local", "--allow-host", "fe80::1"]
                            ).allow_host == ["192.168.1.5", "box.local", "fe80::1"]
    for flag, bad in [("--allow-origin", "*"), ("--allow-origin", "localhost:3000"), ("--allow-origin", "http://a.example/page"),
                      ("--allow-origin", "javascript:alert(1)"), ("--allow-host", "192.168.1.5:8000"),
                      ("--allow-host", "http://box.local"), ("--allow-host", "")]:
        with pytest.raises(SystemExit) as e:
            serve.parse_args([flag, bad])
        assert e.value.code == 2


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1:8001", "127.0.0.2:8000", ""])
def test_a_host_header_naming_another_server_is_refused(client, host):
    """DNS rebinding: attacker.example resolved to 127.0.0.1 makes the page same-origin with itself."""
    headers = {"Host": host, "Origin": f"http://{host}"}
    one_line_error(client.post("/explain", json={"text": TEXT, "method": "ig"}, headers=headers), 421, "Host")
    assert client.get("/", headers={"Host": host}).status_code == 421


def test_the_bound_address_and_loopback_names_are_answered(explainer, client):
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"):
        assert client.post("/explain", json={"text": TEXT, "method": "grad"}, headers={"Host": host}).status_code == 200
    lan = TestClient(serve.make_app(explainer, host="0.0.0.0", port=8000, allow_hosts=["192.168.1.5"]), base_url=BASE)
    for host in ("0.0.0.0:8000", "192.168.1.5:8000", "localhost:8000"):
        assert lan.get("/", headers={"Host": host}).status_code == 200
    assert lan.get("/", headers={"Host": "192.168.1.6:8000"}).status_code == 421
    assert guard.allowed_hosts("::1", 80) >= {"[::1]", "[::1]:80", "localhost", "127.0.0.1:80"}


# --- bodies: capped while they stream in, JSON checked in one line -------------------------------

def call(app, chunks, headers=(), end=True):
    """POST /explain straight into the ASGI app with the body in `chunks` (a generator is read lazily):
    returns (status, body, how many chunks the app asked for). end=False: the client goes away after them."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/explain", "raw_path": b"/explain", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    chunks, asked, sent = iter(chunks), [0], {}
    pending = [next(chunks, None)]

    async def receive():
        if pending[0] is None:
            if not end:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)   # nothing more will come
        asked[0] += 1
        chunk, pending[0] = pending[0], next(chunks, None)
        return {"type": "http.request", "body": chunk, "more_body": pending[0] is not None or not end}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] = sent.get("body", b"") + message.get("body", b"")

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
    return sent.get("status"), sent.get("body", b""), asked[0]


def test_a_body_over_the_cap_is_refused_as_it_streams_in(explainer):
    """A 16 MB body sent in 64 KB pieces: the answer is a 413 once the cap is passed, the rest never read."""
    app, piece = serve.make_app(explainer), b" " * 65536
    status, body, asked = call(app, (piece for _ in range(256)))           # no Content-Length (chunked)
    assert status == 413 and "over" in json.loads(body)["error"]
    assert asked <= serve.MAX_BODY // len(piece) + 1
    status, _, asked = call(app, (piece for _ in range(256)), [(b"content-length", str(256 * len(piece)).encode())])
    assert status == 413 and asked == 0                                     # refused from the header alone


def test_a_client_gone_mid_body_is_one_line_in_the_log(explainer, capsys):
    status, _, asked = call(serve.make_app(explainer), [b'{"text": "'], [(b"content-length", b"1000")], end=False)
    err = capsys.readouterr().err
    assert asked == 1 and status in (None, 400)
    assert err.count("\n") == 1 and "went away" in err and "Traceback" not in err, err


@pytest.mark.parametrize("content,words", [
    (b"[" * 100000 + b"]" * 100000, ("nested too deep",)),
    (b'{"text": "x", "method": "ig", "x": ' + b"[" * 40 + b"]" * 40 + b"}", ("nested too deep", "32")),
    (b'{"text": "\\ud800", "method": "ig"}', ("'text'", "lone surrogate")),
    (b'{"text": "\\udfff\\ud800", "method": "ig"}', ("lone surrogate",)),
    (b'{"text": "x", "method": "\\ud83d"}', ("'method'", "lone surrogate")),
    (b'{"text": "x", "method": "ig", "\\ud800": 1}', ("lone surrogate",)),
    (b'{"text": "\xff\xfe", "method": "ig"}', ("not UTF-8",)),
    (b'{"text": "x", "method": "ig", "steps": NaN}', ("not JSON",)),
])
def test_deep_json_and_invalid_unicode_get_a_one_line_400(client, content, words):
    one_line_error(client.post("/explain", content=content, headers=JSON), 400, *words)


def test_a_paired_surrogate_escape_is_a_character(client):
    reply = client.post("/explain", content=b'{"text": "\\ud83d\\ude00\\u623f", "method": "grad"}', headers=JSON)
    assert reply.status_code == 200 and reply.json()["tokens"] == ["😀", "房"]


@pytest.mark.parametrize("text", ["\u0000", "\ufeff", "\x01\x02\x1b", "\ufeff \t\n\u0085", "\x7f\x9f"])
def test_a_text_that_cleans_to_nothing_is_refused_as_the_command_lines_refuse_it(client, text):
    one_line_error(client.post("/explain", json={"text": text, "method": "ig"}), 400, "'text'", "empty")


def test_an_unexpected_error_is_a_one_line_500_and_the_server_goes_on(ckpt, capsys):
    class Broken(serve.Explainer):
        def explain(self, request):
            raise RuntimeError("boom\nsecond line")
    broken = TestClient(serve.make_app(Broken(ckpt)), base_url=BASE)
    one_line_error(broken.post("/explain", json={"text": TEXT, "method": "ig"}), 500, "RuntimeError", "boom")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "boom" in err and "Traceback" not in err


def test_the_first_font_build_does_not_wait_for_an_explanation(ckpt):
    """/font.css's first build (seconds) holds a lock of its own: it is answered while an explanation runs."""
    explainer = serve.Explainer(ckpt)
    app = TestClient(serve.make_app(explainer), base_url=BASE)
    replies = []
    with explainer.lock:   # an explanation in progress
        fetch = threading.Thread(target=lambda: replies.append(app.get("/font.css")), daemon=True)
        fetch.start()
        fetch.join(60)
        answered = not fetch.is_alive()
    fetch.join(60)
    assert answered, "GET /font.css waited for the explanation lock"
    assert replies[0].status_code == 200 and replies[0].text.startswith("@font-face")


# --- the real server ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tiny_checkpoints, tmp_path_factory):
    """serve.py started as a user starts it, TensorFlow's log level not set; its stderr in a file."""
    log = str(tmp_path_factory.mktemp("serve") / "stderr.txt")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc, url = start_server(tiny_checkpoints["cnn"], log=log, env=env)
    yield url, proc, log
    stop_server(proc)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait_for(path, needle, seconds=20):
    """The log once it holds needle (or as it is after `seconds`)."""
    deadline = time.monotonic() + seconds
    while needle not in read(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    return read(path)


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def raw_request(url, data, wait=10):
    """Send raw bytes to the server and return what it answers within `wait` seconds (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=wait) as s:
        s.sendall(data)
        answer, deadline = b"", time.monotonic() + wait
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            if select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
                try:
                    piece = s.recv(65536)
                except ConnectionResetError:
                    break
                if not piece:
                    break
                answer += piece
        return answer


def test_start_up_shows_no_tensorflow_noise(live):
    url, _, log = live
    lines = read(log).splitlines()
    assert lines and lines[0] == f"serving {url}/ (Ctrl-C stops)", lines[:5]
    assert not any("cuda" in line.lower() or line.startswith(("E0000", "W0000", "I0000")) for line in lines), lines


def test_a_huge_content_length_is_refused_from_the_headers_alone(live):
    """256 MB announced: 413 before a byte of the body is sent (it was read into memory before)."""
    url, _, _ = live
    head = (f"POST /explain HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {256 << 20}\r\n\r\n").encode()
    answer = raw_request(url, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200] or "no answer within 10 s"


def test_a_streamed_body_is_cut_off_once_over_the_cap(live):
    """A chunked body (no Content-Length): 413 once 256 KB are in, without the rest or its end."""
    url, _, _ = live
    head = (f"POST /explain HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    assert raw_request(url, head + b"10000\r\n" + b" " * 0x10000 + b"\r\n", wait=2) == b""   # 64 KB: under the cap
    chunks = b"".join(b"10000\r\n" + b" " * 0x10000 + b"\r\n" for _ in range(4))   # 262,144 bytes > MAX_BODY
    answer = raw_request(url, head + chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200] or "no answer within 10 s"


def test_a_client_gone_mid_body_leaves_one_line_not_a_traceback(live):
    url, _, log = live
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as s:
        s.sendall((f"POST /explain HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: 1000\r\n\r\n" + '{"text": "').encode())
        time.sleep(0.5)
    text = wait_for(log, "went away")
    assert "went away" in text and "Traceback" not in text, text[-3000:]


# --- the page in a real browser -----------------------------------------------------------------

def stand_in(serve_url):
    """A second loopback HTTP server, another origin: /evil is another site's page that POSTs to serve.py
    (a text/plain form into an iframe, and a fetch); / is serve.py's page in front of a backend whose
    /explain answers a plain-text 500."""
    target = f"{serve_url}/explain"
    evil = f"""<!doctype html><html><head><meta charset="utf-8"></head><body>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" action="{target}" enctype="text/plain" target="sink">
<input type="hidden" name='{{"text":"房间很干净","method":"ig","x":"' value='"}}'></form>
<script>
document.getElementById("f").submit();
fetch("{target}", {{method: "POST", headers: {{"Content-Type": "text/plain"}},
                    body: JSON.stringify({{text: "房间很干净", method: "ig"}})}})
  .then(r => r.text().then(t => document.body.dataset.fetch = "read " + r.status + " " + t),
        e => document.body.dataset.fetch = "blocked");
</script></body></html>""".encode()
    page = serve.page_html(["negative", "positive"]).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body, kind):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/evil":
                return self.answer(200, evil, "text/html; charset=utf-8")
            if self.path == "/font.css":
                return self.answer(200, b"", "text/css")
            return self.answer(200, page, "text/html; charset=utf-8")

        def do_POST(self):
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
            self.answer(500, b"Internal Server Error", "text/plain")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_chromium_another_sites_page_is_refused_and_a_server_error_is_shown(live):
    url, _, log = live
    driver = chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    httpd, other = stand_in(url)
    try:
        # another site's page: its form lands a refusal in the iframe, its fetch a refusal in the log
        driver.get(other + "/evil")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-fetch"))
        driver.switch_to.frame("sink")
        framed = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").text)
        driver.switch_to.default_content()
        assert "another origin" in framed and "tokens" not in framed, framed
        refused = f"refused POST /explain: Origin '{other}'"
        text = wait_for(log, refused)
        assert text.count(refused) >= 2, text[-2000:]
        # a page whose server answers a 500 that is not JSON: shown as an error, not "…" forever
        driver.get(other + "/")
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "results").get_attribute("data-done"))
        panels = driver.find_elements(By.CSS_SELECTOR, "#results .method")
        assert len(panels) == 2
        for panel in panels:
            error = panel.find_element(By.CSS_SELECTOR, ".error").text
            assert "500" in error and "not JSON" in error, panel.text
    finally:
        driver.quit()
        httpd.shutdown()
        httpd.server_close()


def test_the_log_holds_no_traceback(live):
    _, _, log = live
    assert "Traceback" not in read(log), read(log)[-3000:]
