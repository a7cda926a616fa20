"""Rendering explanations without TensorFlow: colours, the original's <font> spans (Markdown),
a self-contained HTML report, terminal colours, and inline display in Jupyter.

Colours: signed scores use a diverging palette, red = pushes towards the explained class,
blue = pushes against it, pale = about zero; each row is scaled to its largest |score|.
Unsigned scores (the gradient's L2 norm, `reduce="l2"`) use a white-to-red scale.
All text from users and data is HTML-escaped, and stripped of control characters before it
reaches a terminal.
"""
import html
import io
import sys
from dataclasses import dataclass

import numpy as np

from tig.errors import printable


def cjk_font():
    """(path, face index) of Noto Sans CJK SC, located through the installed pip package."""
    import os

    import noto_cjk_sans_otc
    folder = os.path.dirname(noto_cjk_sans_otc.__file__)
    paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.lower().endswith((".ttc", ".otf"))]
    if not paths:
        raise RuntimeError(f"no font file in {folder}")
    return paths[0], 2   # faces: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK


def escape(text):
    """The one escaper for reports: the sanitiser (errors.printable), then HTML escaping."""
    return html.escape(printable(text))


RED, BLUE, WHITE = (178, 24, 43), (33, 102, 172), (255, 255, 255)
FONT_BASE = (200, 200, 200)  # <font> colour for ~0: pale, yet still readable on white
# one vocabulary of attribution methods, shared by visualize.py and evaluate.py
METHOD_TITLES = {"ig": "integrated gradients", "gradxinput": "gradient x input", "saliency": "gradient (L2 norm)",
                 "ig-l2": "integrated gradients (L2 norm)", "random": "random order",
                 "surrogate": "deletion surrogate", "occlusion": "occlusion (leave one out)",
                 "deletion-ig": "integrated gradients over random deletions",
                 "greedy-erasure": "greedy erasure guided by deletion IG"}


@dataclass
class Explanation:
    """One text explained by one method, ready to render."""
    text: str                 # the cleaned input text
    units: list               # display units (characters, or words with level="word")
    scores: np.ndarray        # one score per unit
    unknown: list             # per unit: True where the model saw UNK
    method: str               # a key of METHOD_TITLES
    target: str
    predicted: str
    prob: float               # probability of the predicted class
    target_prob: float
    label: str = None         # true label, for samples from a data set
    steps: int = None
    delta: float = None
    truncated: int = 0        # characters beyond maxlen the model never saw
    signed: bool = True
    baseline: str = None
    output_kind: str = "probability"   # what F is: a class probability, or a raw model output

    def _repr_html_(self):
        """Jupyter shows an Explanation inline as coloured spans with its caption (CJK font embedded)."""
        return notebook_html([self])


class Explanations(list):
    """A list of Explanations that a notebook displays as one block, with one embedded font."""

    def _repr_html_(self):
        return notebook_html(self)


NOTEBOOK_FONTS = "'Noto Sans CJK SC','PingFang SC','Microsoft YaHei',sans-serif"


def notebook_html(explanations):
    """Explanations as HTML for Jupyter: coloured units (score on hover), caption and notes, with
    the CJK font subset embedded like the report's, so Chinese renders without a system font.
    The font family is named after its characters: each output keeps its own subset even when
    a notebook shows several."""
    import hashlib
    blocks, chars = [], "0123456789+-.%#·()"
    for expl in explanations:
        lines = [caption(expl)] + notes(expl)
        chars += "".join(expl.units) + "".join(lines)
        blocks.append(f'<div style="font-size:1.2em;line-height:1.8">{to_font_html(expl, background=True)}</div>'
                      + "".join(f'<div style="font-size:0.8em;color:#555">{html.escape(line)}</div>' for line in lines))
    family = "TIG CJK " + hashlib.sha1(chars.encode("utf-8")).hexdigest()[:12]
    return (f"<style>{embedded_font_css(chars, family)}</style>"
            f"<div style=\"font-family:'{family}',{NOTEBOOK_FONTS}\">{'<br>'.join(blocks)}</div>")


def names_of(names=None, classes=None):
    """(vocabulary, classes) from a checkpoint or user model (its tokenizer and classes), a
    tokenizer (its .vocab), or a vocabulary list; `classes` given explicitly wins."""
    vocabulary = None
    if names is not None:
        tokenizer = getattr(names, "tokenizer", None)
        if tokenizer is not None and classes is None:
            classes = getattr(names, "classes", None)
        source = tokenizer if tokenizer is not None else names
        vocabulary = list(getattr(source, "vocab", source))
    return vocabulary, None if classes is None else list(classes)


def attribution_explanations(attribution, names=None, classes=None):
    """An Attribution of tig/saliency.py / tig/ig.py as Explanations (one per text):
    its tokens (or those of `names`: a checkpoint, a tokenizer or a vocabulary) and class names."""
    from tig.tokenizer import PAD_ID
    vocabulary, classes = names_of(names, classes)
    if vocabulary is None and attribution.tokens is None:
        raise ValueError("this attribution was made from token ids alone; give a checkpoint, a tokenizer or a "
                         "vocabulary, e.g. attribution.show(ckpt)")
    out = Explanations()
    for row, ids in enumerate(np.asarray(attribution.token_ids)):
        real = np.flatnonzero(ids != PAD_ID)
        end = int(real[-1]) + 1 if len(real) else 0
        if vocabulary is not None:
            units = [vocabulary[i] if 0 <= i < len(vocabulary) else f"[{i}]" for i in ids[:end]]
        else:
            units = list(attribution.tokens[row][:end])
        target, predicted = int(attribution.target[row]), int(np.argmax(attribution.probs[row]))

        def name(c):
            return classes[c] if classes is not None and c < len(classes) else f"class {c}"
        out.append(Explanation(
            text="".join(units), units=units, scores=np.asarray(attribution.scores[row][:end]),
            unknown=[False] * end, method=attribution.method, target=name(target),
            predicted=name(predicted), prob=float(attribution.probs[row, predicted]),
            target_prob=float(attribution.probs[row, target]),
            steps=None if attribution.steps is None else int(attribution.steps[row]),
            delta=None if attribution.delta is None else float(attribution.delta[row]),
            signed=attribution.method != "saliency", baseline=attribution.baseline,
            output_kind="probability" if attribution.output_kind in ("softmax", "sigmoid") else "raw"))
    return out


def attribution_html(attribution):
    """An Attribution in a notebook: its tokens coloured when it knows them; made from token ids
    alone, a note saying how to see characters and class names (ids mean nothing to a reader)."""
    if attribution.tokens is None:
        count = len(attribution.scores)
        return (f"<div>Attribution ({METHOD_TITLES.get(attribution.method, attribution.method)}) of {count} "
                f"text{'s' if count != 1 else ''} made from token ids alone: scores in <code>.scores</code>; "
                "display <code>.show(ckpt)</code> (or <code>.show(tokenizer, classes)</code>) to see the "
                "characters and class names.</div>")
    return attribution_explanations(attribution)._repr_html_()


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

def to_font_html(expl, background=False):
    """The original's Markdown-compatible form: <font color="#rrggbb">字</font> per unit
    (background=True: coloured backgrounds instead, for notebooks)."""
    if background:
        return "".join(f'<span style="background:{hex_colour(c)}" title="{s:+.4g}">{escape(u)}</span>'
                       for u, c, s in zip(expl.units, unit_colours(expl), expl.scores))
    return "".join(f'<font color="{hex_colour(c)}">{escape(u)}</font>'
                   for u, c in zip(expl.units, unit_colours(expl, FONT_BASE)))


def output_text(value, output_kind):
    """A probability as a percentage; a raw output (a logit) as a number."""
    return f"{value:.1%}" if output_kind == "probability" else f"logit {value:.4g}"


def caption(expl, with_prediction=True):
    parts = []
    if with_prediction:
        if expl.label is not None:
            parts.append(f"label {expl.label}")
        parts.append(f"predicted {expl.predicted} ({output_text(expl.prob, expl.output_kind)})")
    if expl.target != expl.predicted:
        parts.append(f"explaining {expl.target} ({output_text(expl.target_prob, expl.output_kind)})")
    method = METHOD_TITLES.get(expl.method, expl.method)
    if expl.steps:
        method += f", {expl.steps} steps, baseline {expl.baseline}, delta {expl.delta:+.1e}"
    if expl.output_kind != "probability":
        method += f" (explaining the target class's {expl.output_kind} output (its logit), not a probability)"
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
            lines.append(f"<sub>{escape(caption(expl))}</sub>")
            lines.extend(f"<sub>{escape(n)}</sub>" for n in notes(expl))
            lines.append("")
    return "\n".join(lines)


LAYOUT_TABLES = ["GSUB", "GPOS", "GDEF", "BASE", "vhea", "vmtx", "VORG"]


def embedded_font_css(text, family="TIG CJK"):
    """@font-face with the CJK font subset to the characters used, so the report renders
    Chinese on any machine, with no network and no system font."""
    try:
        import base64
        from fontTools import subset
        from fontTools.ttLib import TTFont
        path, index = cjk_font()
        font = TTFont(path, fontNumber=index, lazy=True)   # read only the tables the subset needs
        options = subset.Options()
        options.name_IDs, options.notdef_outline = ["*"], True
        # no OpenType layout (vertical forms, locale variants): horizontal text needs none, and
        # reading the full font's layout tables made the subset ~4x slower (18 s vs 4.5 s, one loaded run)
        options.layout_features, options.drop_tables = [], options.drop_tables + LAYOUT_TABLES
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=text)
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.save(buffer)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception as e:   # the report still works with the reader's own fonts
        print(printable(f"warning: font not embedded ({e})"), file=sys.stderr)
        return ""
    return f"@font-face{{font-family:'{family}';src:url(data:font/otf;base64,{data}) format('opentype');}}"


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
    body = [f"<h1>{escape(title)}</h1>",
            f'<div class="legend"><span>{labels[0]}</span><span class="bar" style="background:{gradient}"></span>'
            f"<span>{labels[2]}</span><span>· each row scaled to its largest |score| · hover a character "
            f"for its score</span></div>"]
    for n, group in enumerate(rows, 1):
        first = group[0]
        meta = [f"#{n}"] + ([f"label <b>{escape(first.label)}</b>"] if first.label is not None else [])
        meta.append(f"predicted <b>{escape(first.predicted)}</b> ({first.prob:.1%})")
        block = [f'<div class="sample"><div class="meta">{" · ".join(meta)}</div>']
        for expl in group:
            spans = []
            for unit, score, rgb, unk in zip(expl.units, expl.scores, unit_colours(expl), expl.unknown):
                tip = f"{score:+.4g}" + (" (UNK: not in the vocabulary)" if unk else "")
                cls = ' class="unk"' if unk else ""
                spans.append(f'<span{cls} style="background:{hex_colour(rgb)}" title="{escape(tip)}">'
                             f"{escape(unit)}</span>")
            block.append(f'<div class="method">{escape(caption(expl, with_prediction=False))}</div>')
            block.append(f'<div class="text">{"".join(spans)}</div>')
            block.extend(f'<div class="meta">{escape(note)}</div>' for note in notes(expl))
        block.append("</div>")
        body.append("".join(block))
    chars = "".join(e.text for g in rows for e in g) + "".join(body) + "0123456789+-.%#·"
    return (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{embedded_font_css(chars)}{REPORT_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def ansi_code(rgb):
    """xterm-256 colour cube index nearest to an RGB colour."""
    return 16 + sum(int(round(c / 255 * 5)) * m for c, m in zip(rgb, (36, 6, 1)))


def to_ansi(expl):
    """Units on coloured backgrounds (256-colour terminal), like the original print_color_text."""
    cells = [f"\x1b[48;5;{ansi_code(c)}m\x1b[38;5;16m{printable(u)}" for u, c in zip(expl.units, unit_colours(expl))]
    return "".join(cells) + "\x1b[0m"


def to_terminal(rows, use_colour):
    """Plain or coloured lines for a terminal: text, caption and notes, control characters removed."""
    lines = []
    for group in rows:
        for expl in group:
            # the units the model saw (a huge text is cut at maxlen; notes() says how much)
            lines.append(to_ansi(expl) if use_colour else printable("".join(expl.units)))
            lines.append("  " + printable(caption(expl)))
            lines.extend("  " + printable(note) for note in notes(expl))
    return "\n".join(lines)
