"""What serve.py's page needs to face a browser: which requests it answers at all (the Host and Origin
checks), how a request body is read (JSON only, capped while it streams in, depth and Unicode checked),
one-line logs, and the page itself (HTML and script, nothing loaded from outside).

A server on 127.0.0.1 is reachable from every web page the user opens: such a page may POST a simple
request (text/plain, a form) without asking first, and may rebind its own host name to 127.0.0.1 (DNS
rebinding) to read the answers. So a request is answered only when its Host header names this server
(the bound address, 127.0.0.1, localhost or [::1], with the port) and its Origin, when it has one, is
this server's own or one the user allowed; /explain reads only application/json, which a cross-origin
page can send only after a preflight that the Origin check refuses.
"""
import html
import json
import re
import sys

from tig.errors import printable

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MAX_DEPTH = 32              # JSON nested deeper than this is refused (a request is two levels deep)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")


class RequestError(ValueError):
    """A bad request: answered with this status and the one-line message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def log(line):
    """One line on the server's stderr (control characters shown as U+FFFD)."""
    print(printable(line), file=sys.stderr, flush=True)


# --- which requests are answered ----------------------------------------------------------------

def host_name(host):
    """An address as it appears in a Host header: an IPv6 address in brackets, names in lower case."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host, port, extra=()):
    """The Host header values this server answers: each name with the port (and bare on port 80)."""
    names = {host_name(h) for h in (*LOOPBACK_NAMES, host, *extra)}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def origin(text):
    """argparse type for --allow-origin: scheme://host[:port], as a browser sends it."""
    import argparse
    value = text.strip().rstrip("/").lower()
    if not _ORIGIN.match(value):
        raise argparse.ArgumentTypeError(f"must be an origin like http://localhost:3000 (scheme://host[:port]), "
                                         f"got {text!r}")
    return value


def host(text):
    """argparse type for --allow-host: a host name or address, without a port."""
    import argparse
    value = text.strip().lower()
    if re.fullmatch(r"[a-z0-9.-]+", value) or (re.fullmatch(r"\[?[0-9a-f:.]+\]?", value) and value.count(":") >= 2):
        return value
    raise argparse.ArgumentTypeError(f"must be a host name or address without a port, e.g. 192.168.1.5, got {text!r}")


class Guard:
    """ASGI middleware: refuses, in one line, a request whose Host is not this server's (421) and one
    whose Origin is neither this server's nor allowed (403), before the app sees it."""

    def __init__(self, app, hosts, origins=()):
        self.app, self.hosts, self.origins = app, set(hosts), set(origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers
        headers = Headers(scope=scope)
        host, sender = headers.get("host", "").lower(), headers.get("origin")
        what = f"{scope['method']} {scope['path']}"[:200]
        if host not in self.hosts:
            log(f"refused {what}: Host {host[:100]!r} is not this server's (a DNS-rebinding page, or a name to "
                f"add with --allow-host)")
            return await refusal(f"the Host header {host[:100]!r} does not name this server", 421,
                                 close=True)(scope, receive, send)
        if sender is not None and sender.lower() != f"http://{host}" and sender.lower() not in self.origins:
            log(f"refused {what}: Origin {sender[:100]!r} is another site (--allow-origin allows one)")
            return await refusal(f"requests from {sender[:100]!r} are not allowed (another origin)", 403,
                                 close=True)(scope, receive, send)
        return await self.app(scope, receive, send)


def refusal(message, status, close=None):
    """A one-line JSON error. close: end the connection after it (default: when the body was not read to
    its end, 413 and 415; the Guard's refusals, which read no body, pass True)."""
    from starlette.responses import JSONResponse
    close = status in (413, 415) if close is None else close
    return JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"} if close else None)


# --- the body -----------------------------------------------------------------------------------

async def read_json(request, max_bytes, max_depth=MAX_DEPTH):
    """The request's JSON value: application/json in UTF-8 only (415), at most max_bytes, counted as
    the body streams in and refused (413) as soon as it is over (the rest is never read), nested at most
    max_depth deep, with every string valid Unicode (400). A client that goes away mid-body raises
    starlette.requests.ClientDisconnect."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    if media.strip().lower() != "application/json":
        raise RequestError(f"the body must be JSON sent as Content-Type: application/json, "
                           f"not {media.strip()[:80] or 'none'!r}", 415)
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]*)", params, re.I)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise RequestError("the body must be UTF-8 JSON", 415)
    too_big = f"the request body is over {max_bytes} bytes"
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise RequestError("Content-Length is not a number")
        if int(length) > max_bytes:
            raise RequestError(too_big, 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(too_big, 413)
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"the body is not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=not_json)
    except RecursionError:
        raise RequestError(f"the JSON is nested too deep (at most {max_depth} levels)") from None
    except ValueError as e:
        raise RequestError(f"the body is not JSON ({str(e)[:120]})") from None
    check_value(value, max_depth)
    return value


def not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def check_value(value, max_depth):
    """RequestError for a value nested over max_depth deep or holding a lone surrogate (a "\\ud800"
    escape, which no UTF-8 text can hold)."""
    stack = [(value, 1, "the body")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise RequestError(f"the JSON is nested too deep (at most {max_depth} levels)")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    stack.append((key, depth, "a key"))
                name = f"'{key}'" if depth == 1 and isinstance(key, str) and not _SURROGATE.search(key) else where
                stack.append((child, depth + 1, name))
        elif isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad:
                raise RequestError(f"{where if where != 'the body' else 'a string'} holds a lone surrogate "
                                   f"(\\u{ord(bad.group()):04x} at character {bad.start()}), which is not valid "
                                   f"Unicode")


# --- the page -----------------------------------------------------------------------------------

def page_html(classes, methods, titles):
    """The page: plain HTML, CSS and script, no external resource; every text goes in as textContent."""
    boxes = "".join(f'<label><input type="checkbox" name="method" value="{m}"{" checked" if m in ("ig", "gradxinput") else ""}>'
                    f"{html.escape(titles[m])}</label> " for m in methods)
    options = '<option value="">predicted</option>' + "".join(
        f'<option value="{i}">{html.escape(c)}</option>' for i, c in enumerate(classes))
    return PAGE.replace("{{BOXES}}", boxes).replace("{{OPTIONS}}", options) \
        .replace("{{TITLES}}", json.dumps(titles).replace("<", "\\u003c"))


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>text-integrated-gradients</title>
<link rel="stylesheet" href="/font.css">
<style>body{font-family:'TIG CJK',sans-serif;margin:2em;max-width:70em}textarea{width:100%;font:inherit;font-size:1.1em}
#results{display:flex;gap:1.5em;flex-wrap:wrap}.method{flex:1;min-width:18em;border:1px solid #ddd;padding:0.8em}
.chars{font-size:1.6em;line-height:1.8;word-break:break-all}.chars span{padding:0 1px}.meta{color:#555;font-size:0.9em}
.error{color:#b00}</style></head><body>
<h2>text-integrated-gradients</h2>
<textarea id="text" rows="3" placeholder="type or paste a text">房间很干净，服务也很周到，就是早餐太差了</textarea>
<p>{{BOXES}} &nbsp; class: <select id="target">{{OPTIONS}}</select> &nbsp; <button id="go">explain</button></p>
<p class="meta">Red supports the class explained, blue opposes it; hover a character for its score.</p>
<div id="results"></div>
<script>
const TITLES = {{TITLES}};
function colour(v, m) {  // v in [-1, 1] -> white..red (positive) or white..blue (negative)
  const a = Math.min(1, Math.abs(v) / (m || 1)), w = Math.round(255 * (1 - a));
  return v >= 0 ? `rgb(255,${w},${w})` : `rgb(${w},${w},255)`;
}
function showError(box, method, message) {
  box.textContent = "";
  const h = document.createElement("h3"); h.textContent = TITLES[method] || method; box.appendChild(h);
  const e = document.createElement("p"); e.className = "error"; e.textContent = message; box.appendChild(e);
}
async function explainOne(text, method, target, box) {
  const body = {text: text, method: method};
  if (target !== "") body.target = target;
  let r, data = null;
  try {
    r = await fetch("/explain", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  } catch (e) { return showError(box, method, `the server could not be reached (${e.message})`); }
  try { data = await r.json(); } catch (e) { data = null; }   // an answer that is not JSON: a proxy, a crash
  if (!r.ok || data === null || typeof data !== "object" || !Array.isArray(data.tokens)) {
    const said = data !== null && typeof data === "object" && typeof data.error === "string" ? data.error : "";
    return showError(box, method, said || `the server answered ${r.status} ${r.statusText}`.trim()
                                          + (data === null ? " (not JSON)" : " (not an explanation)"));
  }
  box.textContent = "";
  const h = document.createElement("h3"); h.textContent = TITLES[data.method] || method; box.appendChild(h);
  const chars = document.createElement("div"); chars.className = "chars";
  const m = Math.max(1e-12, ...data.scores.map(Math.abs));
  data.tokens.forEach((t, i) => {
    const s = document.createElement("span"); s.textContent = t; s.className = "unit";
    s.style.background = colour(data.scores[i], m); s.title = data.scores[i].toPrecision(4); chars.appendChild(s);
  });
  box.appendChild(chars);
  const p = document.createElement("p"); p.className = "meta";
  const probs = data.probabilities.map((v, i) => `${data.classes[i]} ${v.toFixed(3)}`).join(", ");
  p.textContent = `explains: ${data.classes[data.target]} · predicted: ${data.classes[data.predicted]} · ${probs}`
    + (data.delta === null ? "" : ` · completeness delta ${data.delta.toExponential(2)} (${data.steps} steps)`);
  box.appendChild(p);
}
async function go() {
  const text = document.getElementById("text").value, target = document.getElementById("target").value;
  const methods = [...document.querySelectorAll("input[name=method]:checked")].map(b => b.value);
  const results = document.getElementById("results"); results.textContent = ""; delete results.dataset.done;
  const boxes = methods.map(m => { const d = document.createElement("div"); d.className = "method"; d.dataset.method = m;
                                   d.textContent = "…"; results.appendChild(d); return d; });
  for (let i = 0; i < methods.length; i++) {
    try { await explainOne(text, methods[i], target, boxes[i]); }
    catch (e) { showError(boxes[i], methods[i], `the answer could not be shown (${e.message})`); }
  }
  results.dataset.done = String(Date.now());
}
document.getElementById("go").addEventListener("click", go);
</script></body></html>"""
