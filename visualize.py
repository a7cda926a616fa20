"""Explain a trained classifier character by character, as HTML <font> spans, an HTML report,
PNG images and terminal colours.

    python visualize.py --method ig --task reviews --text "房间很干净，服务也好"
    python visualize.py --method both --task hotel --data-dir ../shared/data -n 5
    python visualize.py --gallery --data-dir ../shared/data     # regenerates asset/

Colours: signed scores use a diverging palette, red = pushes towards the explained class,
blue = pushes against it, pale = about zero; each row is scaled to its largest |score|.
`--reduce l2` shows the original project's unsigned view on a white-to-red scale.
"""
import os

from dataset import quiet_tensorflow

quiet_tensorflow()   # before anything imports TensorFlow: keeps the command line output clean

import functools
import html
import io
import sys
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np

METHODS = ("ig", "grad", "both")
FORMATS = ("html", "md", "png", "ansi")
STEPS = 50
BATCH = 32                  # texts explained per call (progress bar granularity)
PNG_WIDTH = 28              # full-width characters per line in PNG images
GALLERY_TASKS = ("thucnews", "weibo", "moods", "hotel")
GALLERY_PER_TASK = 4
GALLERY_MAXCHARS = 48       # gallery sentences are short enough to read in a README
RED, BLUE, WHITE = (178, 24, 43), (33, 102, 172), (255, 255, 255)
FONT_BASE = (200, 200, 200)  # <font> colour for ~0: pale, yet still readable on white
FONT_FAMILY = "Noto Sans CJK SC"
METHOD_NAMES = {"ig": "integrated gradients", "grad": "gradient x input", "saliency": "gradient (L2)",
                "ig-l2": "integrated gradients (L2)"}


@dataclass
class Explanation:
    text: str                 # the cleaned input text
    units: list               # display units (characters, or words with --level word)
    scores: np.ndarray        # one score per unit
    unknown: list             # per unit: True where the model saw UNK
    method: str
    target: str
    predicted: str
    prob: float               # probability of the predicted class
    target_prob: float
    label: str = None         # true label, for samples from a data set
    steps: int = None
    delta: float = None
    truncated: int = 0        # characters beyond maxlen the model never saw
    signed: bool = True
    extra: dict = field(default_factory=dict)


# --- explaining ---------------------------------------------------------------------

def explain(ckpt, texts, method="ig", *, steps=STEPS, baseline=None, target=None, reduce="sum",
            level="char", labels=None, progress=False):
    """Explain texts with one method ("ig" or "grad"); returns one Explanation per text."""
    from gradients import gradients
    from integrated_gradients import DEFAULT_BASELINE, integrated_gradients
    baseline = baseline or DEFAULT_BASELINE
    tokenizer, maxlen = ckpt.tokenizer, ckpt.maxlen
    name = {("ig", "sum"): "ig", ("ig", "l2"): "ig-l2", ("grad", "sum"): "grad", ("grad", "l2"): "saliency"}.get(
        (method, reduce))
    if name is None:
        raise ValueError(f"unknown method/reduce {method!r}/{reduce!r}: use ig or grad, sum or l2")
    out, bar = [], None
    if progress and len(texts) > BATCH:
        import keras
        bar = keras.utils.Progbar(len(texts), unit_name="text")
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        token_lists = [tokenizer.tokenize(t) for t in chunk]
        ids = tokenizer.encode(chunk, maxlen)
        if method == "ig":
            attribution = integrated_gradients(ckpt.model, ids, target, baseline=baseline, steps=steps, reduce=reduce)
        else:
            attribution = gradients(ckpt.model, ids, target, times_input=reduce == "sum", reduce=reduce)
        for row, tokens in enumerate(token_lists):
            seen = tokens[:maxlen]
            units, scores, unknown = group_units(seen, attribution.scores[row, :len(seen)],
                                                 ids[row, :len(seen)], tokenizer, level)
            pred = int(attribution.probs[row].argmax())
            tgt = int(attribution.target[row])
            out.append(Explanation(
                text="".join(tokens), units=units, scores=scores, unknown=unknown, method=name,
                target=ckpt.classes[tgt], predicted=ckpt.classes[pred], prob=float(attribution.probs[row, pred]),
                target_prob=float(attribution.probs[row, tgt]),
                label=None if labels is None else ckpt.classes[labels[start + row]],
                steps=None if attribution.steps is None else int(attribution.steps[row]),
                delta=None if attribution.delta is None else float(attribution.delta[row]),
                truncated=len("".join(tokens[maxlen:])), signed=reduce == "sum",
                extra={"baseline": attribution.baseline}))
        if bar:
            bar.update(min(start + BATCH, len(texts)))
    return out


def group_units(tokens, scores, token_ids, tokenizer, level):
    """Model tokens -> display units; with --level word, char scores are summed per jieba word."""
    from tokenizer import UNK_ID
    unknown = [int(i) == UNK_ID for i in token_ids]
    if level == "char" or tokenizer.level == "word":
        return list(tokens), np.asarray(scores, np.float32), unknown
    import jieba
    jieba.setLogLevel(60)
    units, grouped, unk, pos = [], [], [], 0
    for word in jieba.lcut("".join(tokens)):
        n = len(word)
        units.append(word)
        grouped.append(float(np.sum(scores[pos:pos + n])))
        unk.append(any(unknown[pos:pos + n]))
        pos += n
    return units, np.asarray(grouped, np.float32), unk


# --- colours ------------------------------------------------------------------------

def normalise(scores):
    peak = float(np.max(np.abs(scores))) if len(scores) else 0.0
    return np.asarray(scores, np.float64) / peak if peak > 0 else np.zeros(len(scores))


def colour(value, signed=True, base=WHITE):
    """value in [-1, 1] -> (r, g, b): base at 0, towards RED (positive) or BLUE (negative)."""
    end = RED if (value >= 0 or not signed) else BLUE
    t = min(1.0, abs(float(value)))
    return tuple(int(round(b + (e - b) * t)) for b, e in zip(base, end))


def hex_colour(rgb):
    return "#%02x%02x%02x" % rgb


def unit_colours(expl, base=WHITE):
    return [colour(v, expl.signed, base) for v in normalise(expl.scores)]


# --- renderers: <font> spans (Markdown), report (HTML), terminal (ANSI) --------------------------

def to_font_html(expl):
    """The original's Markdown-compatible form: <font color="#rrggbb">字</font> per unit."""
    return "".join(f'<font color="{hex_colour(c)}">{html.escape(u)}</font>'
                   for u, c in zip(expl.units, unit_colours(expl, FONT_BASE)))


def caption(expl, with_prediction=True):
    parts = []
    if with_prediction:
        if expl.label is not None:
            parts.append(f"label {expl.label}")
        parts.append(f"predicted {expl.predicted} ({expl.prob:.1%})")
    if expl.target != expl.predicted:
        parts.append(f"explaining {expl.target} ({expl.target_prob:.1%})")
    method = METHOD_NAMES.get(expl.method, expl.method)
    if expl.steps:
        method += f", {expl.steps} steps, baseline {expl.extra.get('baseline')}, delta {expl.delta:+.1e}"
    parts.append(method)
    return " · ".join(parts)


def notes(expl):
    out = []
    if expl.truncated:
        out.append(f"{expl.truncated} characters beyond maxlen were not seen by the model and are not shown")
    unknown = sorted({u for u, k in zip(expl.units, expl.unknown) if k})
    if unknown:
        out.append("unknown to the model (UNK): " + " ".join(unknown))
    return out


def to_markdown(rows):
    """rows: list of lists of Explanations (one list per text, one entry per method)."""
    lines = []
    for group in rows:
        for expl in group:
            lines.append(f"{to_font_html(expl)}  ")
            lines.append(f"<sub>{html.escape(caption(expl))}</sub>")
            lines.extend(f"<sub>{html.escape(n)}</sub>" for n in notes(expl))
            lines.append("")
    return "\n".join(lines)


def embedded_font_css(text):
    """@font-face with the CJK font subset to the characters used, so the report renders
    Chinese on any machine, with no network and no system font."""
    try:
        import base64
        from fontTools import subset
        from fontTools.ttLib import TTFont
        path, index = cjk_font()
        font = TTFont(path, fontNumber=index, lazy=False)
        options = subset.Options()
        options.name_IDs, options.notdef_outline = ["*"], True
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=text)
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.save(buffer)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception as e:   # the report still works with the reader's own fonts
        print(f"warning: font not embedded ({e})", file=sys.stderr)
        return ""
    return f"@font-face{{font-family:'TIG CJK';src:url(data:font/otf;base64,{data}) format('opentype');}}"


REPORT_CSS = """
body{font-family:'TIG CJK','Noto Sans CJK SC','PingFang SC','Microsoft YaHei',sans-serif;margin:2em;color:#222;max-width:60em}
.sample{border-top:1px solid #ddd;padding:0.8em 0}
.text{font-size:1.35em;line-height:1.9;word-break:break-all}
.text span{padding:0.08em 0.02em;border-radius:2px}
.text span.unk{text-decoration:underline dotted #555}
.meta{font-size:0.85em;color:#555}
.method{font-size:0.8em;color:#333;font-weight:600;margin-top:0.4em}
.legend{display:flex;flex-wrap:wrap;align-items:center;gap:0.6em;font-size:0.85em}
.legend span{white-space:nowrap}
.bar{width:16em;height:1em;border:1px solid #ccc}
"""


def to_report_html(rows, title="text-integrated-gradients report"):
    """One self-contained HTML file: text, labels, method, steps, delta, legend, score on hover."""
    signed = all(e.signed for group in rows for e in group)
    gradient = (f"linear-gradient(to right,{hex_colour(BLUE)},#ffffff,{hex_colour(RED)})" if signed
                else f"linear-gradient(to right,#ffffff,{hex_colour(RED)})")
    labels = ("against the class", "0", "for the class") if signed else ("0", "", "largest |score|")
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<div class="legend"><span>{labels[0]}</span><span class="bar" style="background:{gradient}"></span>'
            f"<span>{labels[2]}</span><span>· each row scaled to its largest |score| · hover a character "
            f"for its score</span></div>"]
    for n, group in enumerate(rows, 1):
        first = group[0]
        meta = [f"#{n}"] + ([f"label <b>{html.escape(first.label)}</b>"] if first.label is not None else [])
        meta.append(f"predicted <b>{html.escape(first.predicted)}</b> ({first.prob:.1%})")
        block = [f'<div class="sample"><div class="meta">{" · ".join(meta)}</div>']
        for expl in group:
            spans = []
            for unit, score, rgb, unk in zip(expl.units, expl.scores, unit_colours(expl), expl.unknown):
                tip = f"{score:+.4g}" + (" (UNK: not in the vocabulary)" if unk else "")
                cls = ' class="unk"' if unk else ""
                spans.append(f'<span{cls} style="background:{hex_colour(rgb)}" title="{html.escape(tip)}">'
                             f"{html.escape(unit)}</span>")
            block.append(f'<div class="method">{html.escape(caption(expl, with_prediction=False))}</div>')
            block.append(f'<div class="text">{"".join(spans)}</div>')
            block.extend(f'<div class="meta">{html.escape(note)}</div>' for note in notes(expl))
        block.append("</div>")
        body.append("".join(block))
    chars = "".join(e.text for g in rows for e in g) + "".join(body) + "0123456789+-.%#·"
    return (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{embedded_font_css(chars)}{REPORT_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def ansi_code(rgb):
    """xterm-256 colour cube index nearest to an RGB colour."""
    return 16 + sum(int(round(c / 255 * 5)) * m for c, m in zip(rgb, (36, 6, 1)))


def to_ansi(expl):
    """Units on coloured backgrounds (256-colour terminal), like the original print_color_text."""
    cells = [f"\x1b[48;5;{ansi_code(c)}m\x1b[38;5;16m{u}" for u, c in zip(expl.units, unit_colours(expl))]
    return "".join(cells) + "\x1b[0m"


# --- PNG --------------------------------------------------------------------------

def cjk_font():
    """(path, face index) of Noto Sans CJK SC, located through the installed pip package."""
    import noto_cjk_sans_otc
    folder = os.path.dirname(noto_cjk_sans_otc.__file__)
    paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.lower().endswith((".ttc", ".otf"))]
    if not paths:
        raise RuntimeError(f"no font file in {folder}")
    return paths[0], 2   # faces: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK


@functools.cache
def font_charmap():
    """Register the CJK font with matplotlib (once) and return the code points it covers."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font
    path, _ = cjk_font()
    font_manager.fontManager.addfont(path)
    matplotlib.rcParams["font.family"] = [FONT_FAMILY]
    matplotlib.rcParams["axes.unicode_minus"] = False
    return frozenset(FT2Font(path).get_charmap())


def setup_matplotlib():
    font_charmap()
    import matplotlib.pyplot as plt
    return plt


def drawable(unit, charmap):
    """Replace characters the font lacks (emoji, rare symbols) with a visible placeholder."""
    return "".join(ch if ord(ch) in charmap or ch.isspace() else "□" for ch in unit)


def unit_width(unit):
    return sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.55 for ch in unit) or 0.55


def layout(units, width):
    """Greedy line wrap: list of lines, each a list of (index, x, w) in character cells."""
    lines, line, x = [], [], 0.0
    for i, unit in enumerate(units):
        w = unit_width(unit)
        if line and x + w > width:
            lines.append(line)
            line, x = [], 0.0
        line.append((i, x, w))
        x += w
    lines.append(line)
    return lines


def to_png(rows, path, width=PNG_WIDTH, title=None):
    """Render explanations to a PNG: per text and method a caption line, then the text with a
    coloured background per unit, wrapped to `width` cells; a colour bar at the bottom."""
    plt = setup_matplotlib()
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle
    charmap = font_charmap()
    signed = all(e.signed for g in rows for e in g)
    blocks = [(e, layout([drawable(u, charmap) for u in e.units], width)) for g in rows for e in g]
    n_lines = sum(len(lines) + 1.4 for _, lines in blocks) + (1.2 if title else 0) + 2.2
    cell = 0.32   # inches per character cell
    fig = plt.figure(figsize=(width * cell + 0.6, n_lines * cell * 1.35 + 0.2), dpi=150)
    ax = fig.add_axes([0.01, 0.0, 0.98, 1.0])
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(n_lines, 0)
    ax.axis("off")
    y = 0.2
    if title:
        ax.text(0, y + 0.5, title, fontsize=11, va="center")
        y += 1.2
    for expl, lines in blocks:
        ax.text(0, y + 0.45, caption(expl), fontsize=7.5, color="#444", va="center")
        y += 1.1
        colours = unit_colours(expl)
        for line in lines:
            for i, x, w in line:
                ax.add_patch(Rectangle((x, y), w, 1.0, facecolor=np.array(colours[i]) / 255, edgecolor="none"))
                ax.text(x + w / 2, y + 0.52, drawable(expl.units[i], charmap), fontsize=13, ha="center",
                        va="center", color="#111")
            y += 1.15
        y += 0.3
    cmap = LinearSegmentedColormap.from_list(
        "tig", [np.array(c) / 255 for c in ((BLUE, WHITE, RED) if signed else (WHITE, RED))])
    bar = fig.add_axes([0.25, 0.6 * cell / fig.get_figheight(), 0.5, 0.35 * cell / fig.get_figheight()])
    bar.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap)
    bar.set_yticks([])
    bar.set_xticks([0, 127.5, 255] if signed else [0, 255])
    bar.set_xticklabels(["against", "0", "for the class"] if signed else ["0", "max |score|"], fontsize=7)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# --- CLI ----------------------------------------------------------------------------

def parse_args(argv=None):
    from dataset import TASKS, ArgumentParser
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="ig", help="ig, grad (gradient x input; with --reduce l2 the "
                                                  "original's gradient L2 norm) or both")
    p.add_argument("--task", default=None, help=f"one of: {', '.join(TASKS)} (checkpoint checkpoints/<task>)")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: checkpoints/<task>)")
    p.add_argument("--text", action="append", default=[], help="a text to explain (repeatable)")
    p.add_argument("--file", default=None, help="a file with one text per line")
    p.add_argument("-n", type=int, default=0, help="explain N samples from the task's test split")
    p.add_argument("--errors", action="store_true", help="with -n: misclassified samples instead of correct ones")
    p.add_argument("--data-dir", default=None, help="data directory for -n and --gallery")
    p.add_argument("--steps", type=int, default=STEPS, help="integrated gradients steps (Gauss-Legendre)")
    p.add_argument("--baseline", default=None, help="zero, pad, unk or mask (default: integrated_gradients')")
    p.add_argument("--target", default=None, help="class to explain, by index or name (default: predicted)")
    p.add_argument("--reduce", default="sum", choices=("sum", "l2"),
                   help="sum: signed (default); l2: the original's unsigned norm per character")
    p.add_argument("--level", default="char", choices=("char", "word"), help="word: jieba words, scores summed")
    p.add_argument("--out", default=None, help="output folder (default: asset/ with --gallery, else a new "
                                               "folder under out/)")
    p.add_argument("--format", default="html,md,png,ansi", help="comma list of: " + ",".join(FORMATS))
    p.add_argument("--color", default="auto", choices=("auto", "always", "never"), help="terminal colours")
    p.add_argument("--gallery", action="store_true",
                   help=f"README gallery: grad and ig PNGs for {', '.join(GALLERY_TASKS)} into asset/")
    args = p.parse_args(argv)
    if args.method not in METHODS:
        p.error(f"unknown method {args.method!r}; choose one of: {', '.join(METHODS)}")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        p.error(f"unknown format {bad[0]!r}; choose from: {', '.join(FORMATS)}")
    args.formats = formats
    if args.task and args.task not in TASKS:
        p.error(f"unknown task {args.task!r}; choose one of: {', '.join(TASKS)}")
    if not args.gallery and not (args.task or args.checkpoint):
        p.error("give --task or --checkpoint")
    if not args.gallery and not (args.text or args.file or args.n):
        p.error("give --text, --file or -n")
    if args.steps < 1:
        p.error("--steps must be at least 1")
    return args


def read_texts(args):
    from dataset import UserError
    from tokenizer import clean_text
    texts = list(args.text)
    if args.file:
        if not os.path.exists(args.file):
            raise UserError(f"text file not found: {args.file}")
        with open(args.file, encoding="utf-8-sig") as f:
            texts.extend(line for line in f.read().splitlines() if line.strip())
    for i, text in enumerate(texts, 1):
        if not clean_text(text):
            raise UserError(f"text {i} is empty; give some characters to explain")
    return [clean_text(t) for t in texts]


def pick_samples(ckpt, task, data_dir, n, errors=False, max_chars=None, balanced=False):
    """The first n test samples (in split order) that the model gets right (or wrong);
    balanced: at most ceil(n / classes) per true class, so a gallery shows several classes."""
    from dataset import load_task
    test = load_task(task, data_dir).test
    cap = -(-n // len(ckpt.classes)) if balanced else n
    chosen_texts, chosen_labels = [], []
    for start in range(0, len(test.texts), 256):
        texts = test.texts[start:start + 256]
        labels = test.labels[start:start + 256]
        pred = ckpt.model.predict(ckpt.tokenizer.encode(texts, ckpt.maxlen), verbose=0).argmax(-1)
        for text, label, p in zip(texts, labels, pred):
            if ((p != label) == errors and (max_chars is None or len(text) <= max_chars)
                    and chosen_labels.count(int(label)) < cap):
                chosen_texts.append(text)
                chosen_labels.append(int(label))
                if len(chosen_texts) == n:
                    return chosen_texts, chosen_labels
    return chosen_texts, chosen_labels


def resolve_target(target, classes):
    from dataset import UserError
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    if target.isdigit() and int(target) < len(classes):
        return int(target)
    raise UserError(f"unknown target {target!r}; classes are: " + ", ".join(f"{i} {c}" for i, c in enumerate(classes)))


def run_methods(ckpt, texts, methods, args, labels=None, target=None):
    """Explain texts with each method; one list per text, one Explanation per method."""
    per_method = [explain(ckpt, texts, m, steps=args.steps, baseline=args.baseline, target=target,
                          reduce=args.reduce, level=args.level, labels=labels, progress=True) for m in methods]
    return [list(group) for group in zip(*per_method)]


def write_outputs(rows, out, formats, stem="explanations", title=None, color="auto"):
    os.makedirs(out, exist_ok=True)
    written = []
    if "md" in formats:
        written.append(os.path.join(out, f"{stem}.md"))
        with open(written[-1], "w", encoding="utf-8") as f:
            f.write(to_markdown(rows))
    if "html" in formats:
        written.append(os.path.join(out, f"{stem}.html"))
        with open(written[-1], "w", encoding="utf-8") as f:
            f.write(to_report_html(rows, title or stem))
    if "png" in formats:
        written.append(to_png(rows, os.path.join(out, f"{stem}.png"), title=title))
    if "ansi" in formats:
        use_colour = color == "always" or (color == "auto" and sys.stdout.isatty())
        for group in rows:
            for expl in group:
                print(to_ansi(expl) if use_colour else expl.text)
                print("  " + caption(expl))
                for note in notes(expl):
                    print("  " + note)
    return written


def gallery(args):
    """asset/<task>_grad.png and asset/<task>_ig.png on the same sentences, plus asset/gallery.md."""
    from model import load_checkpoint
    out = args.out or "asset"
    os.makedirs(out, exist_ok=True)
    sections = []
    for task in GALLERY_TASKS:
        ckpt = load_checkpoint(os.path.join("checkpoints", task))
        texts, labels = pick_samples(ckpt, task, args.data_dir, GALLERY_PER_TASK, max_chars=GALLERY_MAXCHARS,
                                     balanced=True)
        metrics = ckpt.metrics
        section = [f"### {task}", "", f"<sub>checkpoint checkpoints/{task} ({ckpt.meta.get('arch')}), "
                                    f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}, "
                                    f"macro-F1 {metrics.get('test_macro_f1', float('nan')):.4f}</sub>", ""]
        for method in ("grad", "ig"):
            rows = run_methods(ckpt, texts, [method], args, labels)
            png = to_png(rows, os.path.join(out, f"{task}_{method}.png"), title=f"{task} · {METHOD_NAMES[method]}")
            section += [f"![{task} {method}]({png})", "", to_markdown(rows), ""]
            print(f"wrote {png}")
        sections.append("\n".join(section))
    with open(os.path.join(out, "gallery.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(sections))
    print(f"wrote {os.path.join(out, 'gallery.md')}")


def main(argv=None):
    args = parse_args(argv)
    if args.gallery:
        return gallery(args)
    from model import load_checkpoint
    ckpt = load_checkpoint(args.checkpoint or os.path.join("checkpoints", args.task))
    target = resolve_target(args.target, ckpt.classes)
    texts, labels = read_texts(args), None
    if args.n:
        task = args.task or ckpt.meta.get("task")
        picked, labels = pick_samples(ckpt, task, args.data_dir, args.n, args.errors)
        if texts:
            labels = None
            texts += picked
        else:
            texts = picked
    if not texts:
        from dataset import UserError
        raise UserError("no texts to explain (the test split had no matching samples)")
    methods = ["grad", "ig"] if args.method == "both" else [args.method]
    rows = run_methods(ckpt, texts, methods, args, labels, target)
    out = args.out or os.path.join("out", time.strftime("visualize-%Y%m%d-%H%M%S"))
    for path in write_outputs(rows, out, args.formats, title=f"{ckpt.meta.get('task', '')} · "
                              f"{', '.join(METHOD_NAMES.get(e.method, e.method) for e in rows[0])}",
                              color=args.color):
        print(f"wrote {path}")


if __name__ == "__main__":
    from dataset import UserError
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
