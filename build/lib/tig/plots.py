"""PNG drawing with a CJK font: explanations as coloured characters (to_png), and the font set-up
that every matplotlib figure of the project (evaluate.py's deletion curves too) uses.

The font is Noto Sans CJK SC from the `noto-cjk-sans-otc` wheel (OFL-1.1), found through the
installed package; characters it lacks (emoji) are drawn as a visible placeholder. Text is
drawn with math parsing off, so a class name like `$x$` stays literal.
"""
import functools
import io
import unicodedata

import numpy as np

from tig.render import BLUE, RED, WHITE, caption, cjk_font, unit_colours

PNG_WIDTH = 28              # full-width characters per line in PNG images
BAR_BOTTOM, BAR_HEIGHT = 0.26, 0.11   # colour bar, inches from the bottom: room for tick labels with descenders
BAR_BAND = 1.1              # rows (of the text's units) kept under the text for the colour bar
FONT_FAMILY = "Noto Sans CJK SC"


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
    matplotlib.rcParams["text.parse_math"] = False   # texts and class names are literal, never mathtext
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
    n_lines = sum(1.15 * len(lines) + 1.4 for _, lines in blocks) + (1.2 if title else 0) + 0.2 + BAR_BAND
    cell = 0.32   # inches per character cell
    fig = plt.figure(figsize=(width * cell + 0.6, n_lines * cell * 1.35 + 0.2), dpi=150)
    ax = fig.add_axes([0.01, 0.0, 0.98, 1.0])
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(n_lines, 0)
    ax.axis("off")
    y = 0.2
    if title:
        ax.text(0, y + 0.5, title, fontsize=11, va="center", parse_math=False)
        y += 1.2
    for expl, lines in blocks:
        ax.text(0, y + 0.45, caption(expl), fontsize=7.5, color="#444", va="center", parse_math=False)
        y += 1.1
        colours = unit_colours(expl)
        for line in lines:
            for i, x, w in line:
                ax.add_patch(Rectangle((x, y), w, 1.0, facecolor=np.array(colours[i]) / 255, edgecolor="none"))
                ax.text(x + w / 2, y + 0.52, drawable(expl.units[i], charmap), fontsize=13, ha="center",
                        va="center", color="#111", parse_math=False)
            y += 1.15
        y += 0.3
    cmap = LinearSegmentedColormap.from_list(
        "tig", [np.array(c) / 255 for c in ((BLUE, WHITE, RED) if signed else (WHITE, RED))])
    bar = fig.add_axes([0.25, BAR_BOTTOM / fig.get_figheight(), 0.5, BAR_HEIGHT / fig.get_figheight()])
    bar.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap)
    bar.set_yticks([])
    bar.set_xticks([0, 127.5, 255] if signed else [0, 255])
    bar.set_xticklabels(["against", "0", "for the class"] if signed else ["0", "max |score|"], fontsize=7)
    save_figure(fig, path, dpi=150)
    return path


def save_figure(fig, path, **kwargs):
    """Save a figure atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt
    from tig.files import atomic_write
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())
