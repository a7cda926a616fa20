"""A local page to try explanations in the browser: type a text, pick methods and a class, see each
method's coloured characters side by side, with the probabilities and the scores on hover.

    python serve.py --checkpoint checkpoints/reviews --port 8000        # then open http://127.0.0.1:8000/
    python serve.py --model out/my_model.keras --classes negative,positive --port 8000
    curl -s localhost:8000/explain -H 'Content-Type: application/json' -d '{"text": "质量太差了", "method": "ig"}'

POST /explain takes {"text", "method"} and optionally "target" (index or class name) and "steps"; it
answers {"tokens", "scores", "target", "probabilities", "classes", "delta", ...}: the scores of
methods.explain_texts, the one path every command and the Python API take. The text is cut as
the command lines cut it; a request over MAX_CHARS characters is refused with a 413.

Built on Starlette (served by uvicorn): a small, well-kept ASGI library with no call home and no
assets of its own, so the page, its script and its CJK font (subset to the model's vocabulary, as the
HTML report embeds one, built at start-up) all come from this process: the page works offline.
Explanations run one at a time behind a lock (TensorFlow graphs and the engine's caches are shared), so
concurrent requests queue and never mix. Bound to 127.0.0.1 unless --host says otherwise; Ctrl-C stops it.

Any web page the user visits can send requests to 127.0.0.1, so (tig/server.py) a request is answered only
when its Host header names this server (127.0.0.1, localhost or [::1] with the port, the --host address,
any --allow-host name; 421 otherwise: DNS rebinding) and its Origin, when it sends one, is this server's
own or an --allow-origin (403 otherwise). /explain reads only application/json bodies (415 otherwise), of at
most MAX_BODY bytes, counted while they stream in (413 as soon as a body is over, the rest never read),
nested at most 32 deep and holding valid Unicode (400). Every refusal is a one-line JSON error, and every
refused request or client gone mid-body one line in the server's log.
"""
import os
import sys
import threading

from tig import server
from tig.cli import quiet_tensorflow
from tig.defaults import INTERACTIVE_STEPS
from tig.server import RequestError, log

HOST = "127.0.0.1"
PORT = 8000
MAX_CHARS = 20000           # a request over this many characters is refused (413)
MAX_BODY = 12 * MAX_CHARS + 10000   # bytes: a character takes at most 12 bytes of JSON (\\ud83d\\ude00)
PAGE_METHODS = ("ig", "gradxinput", "saliency", "occlusion")   # ticked choices on the page (ig, grad ticked)


class Explainer:
    """The model behind the page: one explanation at a time, and the page's font built once (under a
    lock of its own: a first /font.css never holds up an explanation)."""

    def __init__(self, ckpt, steps=INTERACTIVE_STEPS):
        self.ckpt, self.steps = ckpt, steps
        self.lock = threading.Lock()
        self._font_lock = threading.Lock()
        self._font = None

    def explain(self, request):
        """A JSON request -> the JSON answer (RequestError for anything a client got wrong)."""
        from tig.cli import class_index
        from tig.methods import NAMES, canonical
        from tig.tokenizer import clean_text
        from tig.validate import MAX_STEPS
        if not isinstance(request, dict):
            raise RequestError("the body must be a JSON object with 'text' and 'method'")
        text, method = request.get("text"), request.get("method", "ig")
        if not isinstance(text, str) or not text.strip():
            raise RequestError("'text' must be a non-empty string")
        if len(text) > MAX_CHARS:
            raise RequestError(f"'text' has {len(text)} characters; at most {MAX_CHARS} are accepted", 413)
        if not clean_text(text):   # as the command lines refuse it: nothing but control characters, BOMs, spaces
            raise RequestError("'text' is empty once control characters and byte-order marks are dropped; "
                               "give some characters to explain")
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
        """@font-face for the page: the CJK font subset to the model's vocabulary (built once)."""
        with self._font_lock:
            if self._font is None:
                from tig.render import embedded_font_css
                vocab = getattr(self.ckpt.tokenizer, "vocab", None) or []
                chars = "".join(sorted({c for token in vocab if isinstance(token, str) for c in token}))
                self._font = embedded_font_css(chars + "，。！？、：；“”‘’（）《》…") if chars else ""
            return self._font

    def build_font(self):
        """Start building the font in the background (at start-up: the first page load need not wait)."""
        threading.Thread(target=self.font_css, name="font", daemon=True).start()


def answer(result, classes):
    """The JSON of one methods.TextAttribution: the tokens the model saw and one score each."""
    return {"tokens": list(result.tokens), "scores": [float(s) for s in result.scores], "method": result.method,
            "target": result.target, "predicted": result.predicted,
            "probabilities": [float(p) for p in result.probs], "classes": list(classes),
            "output_kind": result.output_kind, "delta": result.delta, "steps": result.steps,
            "truncated": int(result.truncated)}


def make_app(explainer, host=HOST, port=PORT, allow_origins=(), allow_hosts=()):
    """The Starlette app: GET / (the page), GET /font.css, POST /explain; behind tig.server.Guard (Host
    and Origin checks) and, for --allow-origin pages, CORS headers."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import ClientDisconnect
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from tig.errors import UserError

    async def page(request):
        return HTMLResponse(page_html(explainer.ckpt.classes),
                            headers={"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"})

    async def font(request):
        return Response(await run_in_threadpool(explainer.font_css), media_type="text/css")

    async def explain(request):
        try:
            data = await server.read_json(request, MAX_BODY)
            return JSONResponse(await run_in_threadpool(explainer.explain, data))
        except RequestError as e:
            return server.refusal(str(e), e.status)
        except UserError as e:
            return server.refusal(str(e), 422)
        except ClientDisconnect:
            client = request.client
            log(f"{client.host if client else 'a client'}:{client.port if client else ''} went away before "
                f"sending its whole request")
            return Response(status_code=400)   # nobody to read it
        except Exception as e:   # a bug: one line in the log and in the answer, the server goes on
            first = (str(e).splitlines() or [""])[0][:200]
            log(f"error: POST /explain failed: {e.__class__.__name__}: {first}")
            return server.refusal(f"internal error ({e.__class__.__name__}: {first})", 500)

    hosts = server.allowed_hosts(host, port, allow_hosts)
    return Starlette(routes=[Route("/", page), Route("/font.css", font), Route("/explain", explain, methods=["POST"])],
                     middleware=[Middleware(server.Guard, hosts=hosts, origins=allow_origins),
                                 Middleware(CORSMiddleware, allow_origins=list(allow_origins),
                                            allow_methods=["GET", "POST"], allow_headers=["Content-Type"])])


def page_html(classes):
    """The page (tig.server.PAGE) with this model's classes and the page's methods."""
    from tig.render import METHOD_TITLES
    return server.page_html(classes, PAGE_METHODS, METHOD_TITLES)


def parse_args(argv=None):
    from tig.cli import ArgumentParser, add_model_arguments, choice, int_range, steps_or_auto
    from tig.dataset import TASKS
    from tig.validate import MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1].strip())
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (default: checkpoints/<task>, else the most recent under checkpoints/)")
    p.add_argument("--task", default=None, type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    add_model_arguments(p)
    p.add_argument("--host", default=HOST,
                   help="address to listen on (default: 127.0.0.1, this machine only); requests must name it, "
                        "127.0.0.1, localhost or [::1] (with the port) in their Host header")
    p.add_argument("--port", default=PORT, type=int_range(1, 65535), help="port (default: 8000)")
    p.add_argument("--allow-origin", action="append", default=[], type=server.origin, metavar="ORIGIN",
                   help="let pages from ORIGIN (scheme://host[:port], e.g. http://localhost:3000) call /explain; "
                        "repeatable (default: none: only the page this server serves may, and a request from "
                        "another site is refused with a 403)")
    p.add_argument("--allow-host", action="append", default=[], type=server.host, metavar="NAME",
                   help="another name or address this server is reached by (its Host header), e.g. the "
                        "machine's LAN address with --host 0.0.0.0; repeatable (default: none: any other Host "
                        "header, as a DNS-rebinding page sends, is refused with a 421)")
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
    app = make_app(explainer, args.host, args.port, args.allow_origin, args.allow_host)
    print(f"serving http://{server.host_name(args.host)}:{args.port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    explainer.build_font()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",   # handles Ctrl-C itself
                proxy_headers=False, server_header=False)   # no proxy in front: its headers are not trusted


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # before TensorFlow loads: no CUDA errors on a CPU machine
    from tig.cli import run
    run(main)
