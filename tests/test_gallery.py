"""gallery.py: the README gallery from real (tiny) checkpoints, its sentences chosen as documented,
the text escaped into <font> spans, and its refusals."""
import html
import os
import re
import shutil

import numpy as np

from conftest import ROOT
from test_cli import in_process

SPAN = re.compile(r'<font color="#[0-9a-f]{6}">(.*?)</font>')


def test_gallery_writes_pngs_and_font_spans_of_correctly_classified_short_sentences(
        capsys, tiny_checkpoints, data_dir, tmp_path):
    import gallery
    from tig.checkpoint import load_checkpoint
    from tig.explanations import pick_samples, predict_probabilities
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints["cnn"], checkpoints / "hotel")
    out = tmp_path / "gallery"
    result = in_process(capsys, gallery.main, "--data-dir", data_dir, "--tasks", "hotel",
                        "--checkpoints", str(checkpoints), "--out", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("hotel_grad.png", "hotel_ig.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "gallery.md").read_text(encoding="utf-8")
    assert "![hotel grad](hotel_grad.png)" in markdown and "![hotel ig](hotel_ig.png)" in markdown

    ckpt = load_checkpoint(str(checkpoints / "hotel"))
    texts, labels = pick_samples(ckpt, "hotel", data_dir, gallery.PER_TASK, max_chars=gallery.MAXCHARS, balanced=True)
    assert texts and all(len(t) <= gallery.MAXCHARS for t in texts)
    assert max(labels.count(c) for c in set(labels)) <= -(-gallery.PER_TASK // len(ckpt.classes))
    np.testing.assert_array_equal(predict_probabilities(ckpt, texts).argmax(-1), labels)   # correctly classified
    shown = ["".join(SPAN.findall(line)) for line in markdown.splitlines() if line.startswith("<font")]
    assert shown == [html.escape(t, quote=False) for t in texts] * 2 or \
        shown == [html.escape(t) for t in texts] * 2, shown      # the same sentences, once per method


def test_gallery_refuses_before_any_work(capsys, data_dir, tmp_path):
    import gallery
    (tmp_path / "checkpoints").mkdir()
    result = in_process(capsys, gallery.main, "--data-dir", data_dir, "--tasks", "hotel",
                        "--checkpoints", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "out"))
    result.expect("no checkpoint for task 'hotel'", 1)
    assert not (tmp_path / "out").exists()
    in_process(capsys, gallery.main, "--tasks", "tweets").expect("tweets", 2)


def test_gallery_default_output_is_git_ignored():
    import gallery
    ignored = open(os.path.join(ROOT, ".gitignore"), encoding="utf-8").read().split()
    assert gallery.OUT.split(os.sep)[0] == "out" and "/out/" in ignored
    assert not os.path.exists(os.path.join(ROOT, "asset", ".tig-output")), \
        "a marker in asset/ would let any command overwrite the README's images without --replace"
