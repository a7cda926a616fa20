"""The README's notebook examples, executed in a real Jupyter kernel (nbclient) and opened in
Chromium: characters and class names, legible without a system CJK font."""
import html
import re

import numpy as np

from conftest import ROOT, skip_or_fail, train_tiny
from test_visualize import CHROMIUM, screenshot

TEXTS = {"good": "房间很好很好", "bad": "房间很差很差"}   # characters of the tiny checkpoint's vocabulary

SETUP = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from tig.cli import quiet_tensorflow
quiet_tensorflow()
"""
# the README's "Explaining from Python" lines, as a reader pastes them into a notebook
README_IG = """
from tig.checkpoint import load_checkpoint
from tig.ig import integrated_gradients
ckpt = load_checkpoint({checkpoint!r})
token_ids = ckpt.tokenizer.encode([{text!r}], ckpt.maxlen)
ig = integrated_gradients(ckpt.model, token_ids, steps=50)
ig.show(ckpt)
"""
README_EXPLAIN = """
import tig
tig.explain(ckpt, [{text!r}], "ig")[0]
"""


def html_outputs(cell):
    return "".join(o["data"]["text/html"] for o in cell.get("outputs", [])
                   if o.get("output_type") == "execute_result" and "text/html" in o.get("data", {}))


def run_notebook(checkpoint, tmp_path):
    try:
        import ipykernel  # noqa: F401
        import nbclient
        import nbformat
    except ImportError as e:
        skip_or_fail(f"{e.name} is not installed (pip install -r requirements.txt)")
    cells = [nbformat.v4.new_code_cell(SETUP.format(root=ROOT))]
    for text in TEXTS.values():
        cells += [nbformat.v4.new_code_cell(README_IG.format(checkpoint=checkpoint, text=text)),
                  nbformat.v4.new_code_cell(README_EXPLAIN.format(text=text)),
                  nbformat.v4.new_code_cell("ig")]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(notebook, str(tmp_path / "readme.ipynb"))
    return notebook


def test_readme_notebook_shows_characters_and_class_names_in_a_browser(data_dir, tmp_path):
    if CHROMIUM is None:
        skip_or_fail("Chromium is not installed (apt-get install chromium)")
    checkpoint = str(tmp_path / "ckpt")
    train_tiny(checkpoint, data_dir, arch="mean", epochs=4)
    notebook = run_notebook(checkpoint, tmp_path)
    pages = {}
    for n, (name, text) in enumerate(TEXTS.items()):
        ig_cell, explain_cell, bare_cell = notebook.cells[1 + 3 * n: 4 + 3 * n]
        for cell in (ig_cell, explain_cell):
            page = html_outputs(cell)
            visible = html.unescape(re.sub(r"<style>.*?</style>|<[^>]*>", "", page))
            assert text in visible, "the text's own characters, not token ids"
            assert re.search(r"predicted (positive|negative)", visible), "class names, not class indices"
            assert "@font-face" in page and "base64," in page, "the CJK font subset is embedded"
        note = html_outputs(bare_cell)
        assert ".show(ckpt)" in note and "[" not in html.unescape(re.sub(r"<[^>]*>", "", note))
        pages[name] = html_outputs(ig_cell) + html_outputs(explain_cell)
    # the cells' HTML output as a page (as nbconvert embeds it), once as produced and once with the
    # embedded font taken out: if the page's Chinese were drawn by a system font, or as tofu boxes
    # because the embedded font failed, the two screenshots would be the same
    shots = {}
    for variant, body in (("embedded", pages["good"]), ("stripped", re.sub(r"@font-face\{[^}]*\}", "", pages["good"]))):
        path = tmp_path / f"{variant}.html"
        path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>',
                        encoding="utf-8")
        shots[variant] = screenshot(path, tmp_path / f"{variant}.png", tmp_path / f"profile-{variant}")
    assert "@font-face" not in (tmp_path / "stripped.html").read_text(encoding="utf-8")
    ink = lambda shot: np.asarray(shot).mean(axis=-1) < 0.35   # noqa: E731  (dark glyph pixels)
    assert ink(shots["embedded"]).sum() > 200, "the characters are drawn"
    assert np.sum(ink(shots["embedded"]) != ink(shots["stripped"])) > 50, "the embedded font draws the characters"
