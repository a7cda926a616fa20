"""A local page to try explanations in the browser: type a text, pick methods and a class, see each
method's coloured characters side by side, with the probabilities and the scores on hover.

    python serve.py --checkpoint checkpoints/reviews --port 8000        # then open http://127.0.0.1:8000/
    python serve.py --model out/my_model.keras --classes negative,positive --port 8000
    curl -s localhost:8000/explain -d '{"text": "质量太差了", "method": "ig"}'

POST /explain takes {"text", "method"} and optionally "target" (index or class name) and "steps"; it
answers {"tokens", "scores", "target", "probabilities", "classes", "delta", ...}: the scores of
methods.explain_texts, the one path every command and the Python API take. The text is cut as
the command lines cut it; a request over MAX_CHARS characters is refused with a 413.

Built on Starlette (served by uvicorn): a small, well-kept ASGI library with no call home and no
assets of its own, so the page, its script and its CJK font (subset to the model's vocabulary, as the
HTML report embeds one) all come from this process: the page works offline. Explanations run one at
a time behind a lock (TensorFlow graphs and the engine's caches are shared), so concurrent requests
queue and never mix. Bound to 127.0.0.1 unless --host says otherwise; Ctrl-C stops it.
"""
import os
import sys
import threading

from tig.cli import quiet_tensorflow
from tig.defaults import INTERACTIVE_STEPS

HOST = "127.0.0.1"
PORT = 8000
MAX_CHARS = 20000           # a request over this many characters is refused (413)
PAGE_METHODS = ("ig", "gradxinput", "saliency", "occlusion")   # ticked choices on the page (ig, grad ticked)


class RequestError(ValueError):
    """A bad request: answered with this status and the one-line message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class Explainer:
    """The model behind the page: one explanation at a time, and the page's font built once."""

    def __init__(self, ckpt, steps=INTERACTIVE_STEPS):
        self.ckpt, self.steps = ckpt, steps
        self.lock = threading.Lock()
        self._font = None

    def explain(self, request):
        """A JSON request -> the JSON answer (RequestError for anything a client got wrong)."""
        from tig.cli import class_index
        from tig.methods import NAMES, canonical
        from tig.validate import MAX_STEPS
        if not isinstance(request, dict):
            raise RequestError("the body must be a JSON object with 'text' and 'method'")
        text, method = request.get("text"), request.get("method", "ig")
        if not isinstance(text, str) or not text.strip():
            raise RequestError("'text' must be a non-empty string")
        if len(text) > MAX_CHARS:
            raise RequestError(f"'text' has {len(text)} characters; at most {MAX_CHARS} are accepted", 413)
        if method not in NAMES:
            raise RequestError(f"unknown method {method!r}; choose one of: {', '.join(NAMES)}")
        target = request.get("target")
        if target is not None:
            target = class_index(str(target), self.ckpt.classes)   # a UserError names the classes
        steps = request.get("steps", self.steps)
        if steps != "auto" and not (isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= MAX_STEPS):
            raise RequestError(f"'steps' must be 'auto' or an integer from 1 to {MAX_STEPS}")
        from tig.methods import explain_texts
        with self.lock:
            result = explain_texts(self.ckpt, [text], canonical(method), target=target, steps=steps)[0]
        return answer(result, self.ckpt.classes)

    def font_css(self):
        """@font-face for the page: the CJK font subset to the model's vocabulary (built on first use)."""
        with self.lock:
            if self._font is None:
                from tig.render import embedded_font_css
                vocab = getattr(self.ckpt.tokenizer, "vocab", None) or []
                chars = "".join(sorted({c for token in vocab if isinstance(token, str) for c in token}))
                self._font = embedded_font_css(chars + "，。！？、：；“”‘’（）《》…") if chars else ""
            return self._font


def answer(result, classes):
    """The JSON of one methods.TextAttribution: the tokens the model saw and one score each."""
    return {"tokens": list(result.tokens), "scores": [float(s) for s in result.scores], "method": result.method,
            "target": result.target, "predicted": result.predicted,
            "probabilities": [float(p) for p in result.probs], "classes": list(classes),
            "output_kind": result.output_kind, "delta": result.delta, "steps": result.steps,
            "truncated": int(result.truncated)}


def make_app(explainer):
    """The Starlette app: GET / (the page), GET /font.css, POST /explain."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from tig.errors import UserError

    async def page(request):
        return HTMLResponse(page_html(explainer.ckpt.classes))

    async def font(request):
        return Response(await run_in_threadpool(explainer.font_css), media_type="text/css")

    async def explain(request):
        body = await request.body()
        if len(body) > 12 * MAX_CHARS + 10000:   # a character takes at most 12 bytes of JSON (\\ud83d\\ude00)
            return JSONResponse({"error": f"the request is over {MAX_CHARS} characters"}, status_code=413)
        try:
            import json
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(explainer.explain, data))
        except RequestError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=422)

    return Starlette(routes=[Route("/", page), Route("/font.css", font), Route("/explain", explain, methods=["POST"])])


def page_html(classes):
    """The page: plain HTML, CSS and script, no external resource; every text goes in as textContent."""
    import html
    import json

    from tig.render import METHOD_TITLES
    boxes = "".join(f'<label><input type="checkbox" name="method" value="{m}"{" checked" if m in ("ig", "gradxinput") else ""}>'
                    f"{html.escape(METHOD_TITLES[m])}</label> " for m in PAGE_METHODS)
    options = '<option value="">predicted</option>' + "".join(
        f'<option value="{i}">{html.escape(c)}</option>' for i, c in enumerate(classes))
    return PAGE.replace("{{BOXES}}", boxes).replace("{{OPTIONS}}", options) \
        .replace("{{TITLES}}", json.dumps(METHOD_TITLES).replace("<", "\\u003c"))


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
async function explainOne(text, method, target, box) {
  const body = {text: text, method: method};
  if (target !== "") body.target = target;
  const r = await fetch("/explain", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  box.textContent = "";
  const h = document.createElement("h3"); h.textContent = TITLES[data.method] || method; box.appendChild(h);
  if (!r.ok) { const e = document.createElement("p"); e.className = "error"; e.textContent = data.error; box.appendChild(e); return; }
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
  const results = document.getElementById("results"); results.textContent = "";
  const boxes = methods.map(m => { const d = document.createElement("div"); d.className = "method"; d.dataset.method = m;
                                   d.textContent = "…"; results.appendChild(d); return d; });
  for (let i = 0; i < methods.length; i++) await explainOne(text, methods[i], target, boxes[i]);
  results.dataset.done = String(Date.now());
}
document.getElementById("go").addEventListener("click", go);
</script></body></html>"""


def parse_args(argv=None):
    from tig.cli import ArgumentParser, add_model_arguments, choice, int_range, steps_or_auto
    from tig.dataset import TASKS
    from tig.validate import MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1].strip())
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (default: checkpoints/<task>, else the most recent under checkpoints/)")
    p.add_argument("--task", default=None, type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    add_model_arguments(p)
    p.add_argument("--host", default=HOST, help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", default=PORT, type=int_range(1, 65535), help="port (default: 8000)")
    p.add_argument("--steps", type=steps_or_auto(MAX_STEPS), default=INTERACTIVE_STEPS,
                   help="integrated gradients steps when a request gives none (default: auto)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    from tig.cli import resolve_explainable
    try:
        import uvicorn
    except ImportError:
        from tig.errors import UserError
        raise UserError("serve.py needs starlette and uvicorn: pip install -r requirements.txt") from None
    explainer = Explainer(resolve_explainable(args), args.steps)
    print(f"serving http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(make_app(explainer), host=args.host, port=args.port, log_level="warning")   # handles Ctrl-C itself


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tig.cli import run
    run(main)
