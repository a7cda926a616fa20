"""visualize.py: escaping, colours, glyphs in PNG and in a real browser, bad input."""
import html
import os
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from conftest import skip_or_fail
from test_cli import assert_clean_failure, in_process, run
from tig import render
from tig.plots import to_png
from tig.render import Explanation, to_ansi, to_font_html, to_markdown, to_report_html

XSS = "<script>alert(1)</script>房间很干净"
SHORT_XSS = "<script>1</script>很干净"     # fits the tiny checkpoint's maxlen of 24


def fake(text, scores, signed=True, **kw):
    return Explanation(text=text, units=list(text), scores=np.asarray(scores, np.float32),
                       unknown=[False] * len(text), method="ig", target="positive", predicted="positive",
                       prob=0.9, target_prob=0.9, steps=50, delta=1e-4, signed=signed,
                       baseline="zero", **kw)


def test_font_spans_are_escaped_and_in_the_original_form():
    spans = to_font_html(fake(XSS, np.linspace(-1, 1, len(XSS))))
    assert re.fullmatch(r'(<font color="#[0-9a-f]{6}">[^<>]+</font>)+', spans)
    assert "<script" not in spans and html.unescape(re.sub(r"<[^>]*>", "", spans)) == XSS
    report = to_report_html([[fake(XSS, np.ones(len(XSS)), label="<b>x</b>")]])
    assert "<script" not in report and "&lt;b&gt;x&lt;/b&gt;" in report


def test_diverging_palette():
    red, blue, zero = (render.colour(v) for v in (1.0, -1.0, 0.0))
    assert red == render.RED and blue == render.BLUE and zero == (255, 255, 255)
    assert render.colour(0.5)[0] > render.colour(0.5)[2]       # reddish
    assert render.colour(-0.5)[2] > render.colour(-0.5)[0]     # bluish
    assert render.colour(-1.0, signed=False) == render.RED      # unsigned: magnitude only
    html_spans = to_font_html(fake("好差", [2.0, -2.0]))
    assert '<font color="#b2182b">好</font><font color="#2166ac">差</font>' == html_spans


def test_ansi_colours():
    text = to_ansi(fake("好差", [1.0, -1.0]))
    assert f"\x1b[48;5;{render.ansi_code(render.RED)}m" in text and text.endswith("\x1b[0m")


def render_png(tmp_path, text, name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_png([[fake(text, [0.5] * len(text))]], str(tmp_path / name))
    glyph_warnings = [str(w.message) for w in caught if "missing" in str(w.message).lower()]
    assert not glyph_warnings, glyph_warnings
    import matplotlib.image
    return matplotlib.image.imread(path)


def test_png_renders_chinese_glyphs_without_warnings(tmp_path):
    good, bad = render_png(tmp_path, "好好好", "a.png"), render_png(tmp_path, "差差差", "b.png")
    assert good.shape == bad.shape
    # a missing font draws the same box for every character: the two images would be equal
    assert np.abs(good - bad).sum() > 50
    render_png(tmp_path, "表情😡和符号", "c.png")   # emoji become a drawn placeholder, not a warning


def test_png_wraps_long_text(tmp_path):
    short = render_png(tmp_path, "好" * 10, "short.png")
    long = render_png(tmp_path, "好" * 100, "long.png")
    assert long.shape[0] > short.shape[0] and long.shape[1] == short.shape[1]


def test_markdown_lists_caption_and_notes():
    md = to_markdown([[fake("好", [1.0], label="positive", truncated=7)]])
    assert "label positive" in md and "7 characters beyond maxlen" in md and "delta +1.0e-04" in md


def test_cli_writes_escaped_html_report_and_png(tiny_checkpoints, tmp_path):
    out = tmp_path / "vis"
    result = run("visualize.py", "--method", "ig", "--checkpoint", tiny_checkpoints["cnn"], "--text", SHORT_XSS,
                 "--text", "前台很脏" * 20, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == [".tig-output", "explanations.html", "explanations.md", "explanations.png"]
    for name in ("explanations.html", "explanations.md"):
        content = (out / name).read_text(encoding="utf-8")
        assert "<script" not in content and SHORT_XSS in html.unescape(re.sub(r"<[^>]*>", "", content))
    assert "\x1b[" not in result.stdout, "no colours when stdout is not a terminal"
    assert "characters beyond maxlen" in result.stdout          # 80 chars > maxlen 24: said
    assert "unknown to the model (UNK)" in result.stdout          # Latin letters are not in the fixture vocab
    assert "Traceback" not in result.stderr


def probe(capsys, *args):
    """visualize.py's main() run here (the test above runs the real command)."""
    import visualize
    return in_process(capsys, visualize.main, *args)


def test_cli_both_methods_word_level_and_forced_colour(tiny_checkpoints, tmp_path, capsys):
    result = probe(capsys, "--method", "both", "--checkpoint", tiny_checkpoints["cnn"], "--text", "房间很干净",
                   "--level", "word", "--format", "ansi,md", "--color", "always", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "\x1b[48;5;" in result.stdout and "gradient x input" in result.stdout
    assert "integrated gradients" in result.stdout


def test_samples_from_the_test_split(tiny_checkpoints, data_dir, tmp_path, capsys):
    result = probe(capsys, "--checkpoint", tiny_checkpoints["cnn"], "-n", "3", "--data-dir", data_dir,
                   "--task", "hotel", "--format", "md", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "explanations.md").read_text(encoding="utf-8")
    assert md.count("label ") == 3


def test_word_level_sums_character_scores(tiny_checkpoints):
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    import visualize
    chars = visualize.explain(ckpt, ["房间很干净"], "ig")[0]
    words = visualize.explain(ckpt, ["房间很干净"], "ig", level="word")[0]
    assert "".join(words.units) == "房间很干净" and len(words.units) < 5
    np.testing.assert_allclose(words.scores.sum(), chars.scores.sum(), atol=1e-6)


def test_bad_input(tiny_checkpoints, tmp_path, capsys):
    ckpt = tiny_checkpoints["cnn"]
    assert_clean_failure(probe(capsys, "--checkpoint", ckpt, "--text", "   "), "text 1 is empty")
    assert_clean_failure(probe(capsys, "--checkpoint", str(tmp_path / "none"), "--text", "好"),
                         "checkpoint not found")
    assert_clean_failure(probe(capsys, "--checkpoint", ckpt), "give --text")
    assert_clean_failure(probe(capsys, "--checkpoint", ckpt, "--text", "好", "--method", "lime"),
                         "unknown method")
    assert_clean_failure(probe(capsys, "--checkpoint", ckpt, "--text", "好", "--target", "maybe"),
                         "unknown target")
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    from tig.checkpoint import current_version
    from tig.tokenizer import Tokenizer
    Tokenizer.fit(["别的词表"], min_freq=1).save(os.path.join(current_version(str(bad)), "tokenizer.json"))
    assert_clean_failure(probe(capsys, "--checkpoint", str(bad), "--text", "好"), "not the vocabulary")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html_path, png_path, profile):
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=900,500",
                    f"--screenshot={png_path}", f"file://{html_path}"],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image
    return matplotlib.image.imread(png_path)[..., :3]


def test_report_in_a_real_browser(tmp_path):
    if CHROMIUM is None:
        skip_or_fail("Chromium is not installed (apt-get install chromium)")
    shots = {}
    for name, text in (("good", "好好好好"), ("bad", "差差差差")):
        page = tmp_path / f"{name}.html"
        page.write_text(to_report_html([[fake(text, [1.0, -1.0, 0.5, -0.5])]]), encoding="utf-8")
        shots[name] = screenshot(page, tmp_path / f"{name}.png", tmp_path / f"profile-{name}")
    pixels = (shots["good"] * 255).round().astype(int).reshape(-1, 3)
    for rgb in (render.RED, render.BLUE):
        assert np.any(np.all(np.abs(pixels - rgb) <= 2, axis=1)), f"no {rgb} background in the screenshot"
    # the embedded CJK font draws different glyphs; tofu boxes would make the two pages equal
    assert np.abs(shots["good"] - shots["bad"]).sum() > 20


def test_without_task_the_newest_checkpoint_is_used(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(tiny_checkpoints["mean"], root / "checkpoints" / "older")
    shutil.copytree(tiny_checkpoints["cnn"], root / "checkpoints" / "newer")
    os.utime(root / "checkpoints" / "older" / "CURRENT", (1, 1))
    monkeypatch.chdir(root)             # checkpoints/ is looked up in the working directory
    result = probe(capsys, "--text", "房间很干净", "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "using the most recent checkpoint: checkpoints/newer" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = probe(capsys, "--text", "好")
    assert_clean_failure(result, "no checkpoint found", "python train.py --task reviews")


def test_notebook_display_is_coloured_and_escaped():
    page = fake(SHORT_XSS, np.linspace(-1, 1, len(SHORT_XSS)))._repr_html_()
    assert "<script" not in page and SHORT_XSS in html.unescape(re.sub(r"<[^>]*>", "", page))
    assert f"background:{render.hex_colour(render.BLUE)}" in page and f"background:{render.hex_colour(render.RED)}" in page
    assert "integrated gradients, 50 steps" in page
