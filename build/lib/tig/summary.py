"""The global summary of a corpus explanation (explain.py): per class, the characters and jieba words
with the largest mean and total attribution, as summary.csv, summary.png and summary.html.
"""
import base64
import csv
import io
import os

from tig.errors import UserError
from tig.files import atomic_write

MIN_COUNT = 5              # a unit must occur this often to be ranked by its mean
TOP_K = 20                 # units per class, level and ranking in summary.csv
PLOT_K = 12                # bars per panel in summary.png


def summarize(lines, classes, level="char"):
    """Per explained class and unit level: {unit: [count, total attribution]}, in one pass. Characters
    come from a char model's tokens; a word model (level "word") has jieba words only."""
    stats = {(c, unit_level): {} for c in classes for unit_level in ("char", "word")}
    for line in lines:
        pairs = [("word", zip(line["words"], line["word_scores"]))]
        if level == "char":
            pairs.append(("char", zip(line["tokens"], line["scores"])))
        for level, units in pairs:
            table = stats[(line["target"], level)]
            for unit, score in units:
                if unit.strip():
                    entry = table.setdefault(unit, [0, 0.0])
                    entry[0] += 1
                    entry[1] += score
    return stats


def rankings(stats, min_count=MIN_COUNT, top=TOP_K):
    """Rows (class, level, ranking, rank, unit, count, mean, total): the largest mean (count >= min_count)
    and the largest total attribution per class and level."""
    rows = []
    for (cls, level), table in stats.items():
        items = [(u, c, t / c, t) for u, (c, t) in table.items() if c >= min_count]
        for ranking, key in (("mean", lambda r: r[2]), ("total", lambda r: r[3])):
            for rank, (unit, count, mean, total) in enumerate(sorted(items, key=lambda r: (-key(r), r[0]))[:top], 1):
                rows.append({"class": cls, "level": level, "ranking": ranking, "rank": rank, "unit": unit,
                             "count": count, "mean": round(mean, 6), "total": round(total, 6)})
    return rows


def write_csv(path, rows):
    def write(f):
        writer = csv.DictWriter(f, fieldnames=["class", "level", "ranking", "rank", "unit", "count", "mean", "total"])
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write(path, write)


def plot_summary(rows, classes, path, title, k=PLOT_K):
    """One row of panels per class: top characters and top words by mean attribution, as bars."""
    from tig.plots import font_charmap, setup_matplotlib
    plt = setup_matplotlib()
    charmap = font_charmap()
    fig, axes = plt.subplots(len(classes), 2, figsize=(9, 0.28 * k * len(classes) + 1.0), squeeze=False)
    for i, cls in enumerate(classes):
        for j, level in enumerate(("char", "word")):
            ax = axes[i][j]
            top = [r for r in rows if r["class"] == cls and r["level"] == level and r["ranking"] == "mean"][:k]
            labels = ["".join(ch if ord(ch) in charmap else "□" for ch in r["unit"]) + f"  ×{r['count']}"
                      for r in top]
            if not top:
                ax.text(0.5, 0.5, f"no unit seen >= min-count times\nin texts explained as {cls}", ha="center",
                        va="center", fontsize=8, color="#555", transform=ax.transAxes)
                ax.set_xticks([])
            ax.barh(range(len(top)), [r["mean"] for r in top], color="#b2182b")
            ax.set_yticks(range(len(top)), labels, fontsize=8)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{cls} · {'characters' if level == 'char' else 'jieba words'} by mean attribution",
                         fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())


def summary_section_html(rows, classes, png_path=None, k=10, note=""):
    """An HTML <section> with the summary picture (embedded) and, per class, the top units tables;
    made to be dropped into a report."""
    from tig.render import escape
    parts = ['<section id="global-summary"><h2>What drives this classifier</h2>']
    if note:
        parts.append(f'<p class="meta">{escape(note)}</p>')
    if png_path and os.path.exists(png_path):
        with open(png_path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f'<img alt="global summary" style="max-width:100%" src="data:image/png;base64,{data}">')
    for cls in classes:
        parts.append(f"<h3>{escape(cls)}</h3><table><tr><th>level</th><th>ranking</th><th>top units "
                     f"(count, value)</th></tr>")
        for level in ("char", "word"):
            for ranking in ("mean", "total"):
                top = [r for r in rows if (r["class"], r["level"], r["ranking"]) == (cls, level, ranking)][:k]
                cells = " · ".join(f"<b>{escape(r['unit'])}</b> ({r['count']}, {r[ranking]:+.3g})" for r in top)
                parts.append(f"<tr><td>{level}</td><td>{ranking}</td><td>{cells or '—'}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def write_summary(out, manifest, lines, min_count=MIN_COUNT, top=TOP_K):
    """summary.csv, summary.png and summary.html in `out` from the job's output lines (dicts)."""
    classes = manifest["classes"]
    n_lines = 0

    def counted(lines):
        nonlocal n_lines
        for line in lines:
            n_lines += 1
            yield line
    stats = summarize(counted(lines), classes, manifest["level"])
    if n_lines != manifest["texts"]:
        raise UserError(f"{out}: shards hold {n_lines} lines for {manifest['texts']} input texts")
    rows = rankings(stats, min_count, top)
    csv_path = write_csv(os.path.join(out, "summary.csv"), rows)
    title = (f"{os.path.basename(manifest['checkpoint'])} · {manifest['method']} · {n_lines} texts · "
             f"units seen >= {min_count} times")
    png_path = plot_summary(rows, classes, os.path.join(out, "summary.png"), title)
    page = (f'<!DOCTYPE html><html lang="zh"><head><meta charset="utf-8"><title>global summary</title>'
            f"<style>body{{font-family:'Noto Sans CJK SC','PingFang SC','Microsoft YaHei',sans-serif;margin:2em;"
            f"max-width:70em}}td,th{{padding:0.2em 0.6em;text-align:left;vertical-align:top}}"
            f".meta{{color:#555}}</style></head><body>"
            f"{summary_section_html(rows, classes, png_path, note=title)}</body></html>\n")
    html_path = atomic_write(os.path.join(out, "summary.html"), page)
    return rows, [csv_path, png_path, html_path]
