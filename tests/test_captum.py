"""bench/compare_captum.py: the same BERT in PyTorch (Captum) and in KerasHub (ours). Without its
optional packages it is one line naming the install command; with them, a tiny configuration runs the
whole comparison and the two explainers agree on the same weights."""
import json
import sys

import pytest

from tig.errors import UserError

INSTALL = "pip install torch==2.13.0 captum transformers"


def test_without_the_extras_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    import compare_captum
    monkeypatch.setitem(sys.modules, "captum", None)     # import captum now raises ImportError
    with pytest.raises(UserError, match="pip install torch==2.13.0 captum transformers"):
        compare_captum.main(["--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists(), "nothing written before the packages are there"


def test_a_tiny_bert_agrees_with_captum(data_dir, tmp_path):
    for name in ("torch", "captum", "transformers"):
        pytest.importorskip(name, reason=f"optional: {INSTALL}")
    import compare_captum
    out = tmp_path / "captum"
    result = compare_captum.main(["--data-dir", data_dir, "--out", str(out), "-n", "6", "--steps", "8",
                                  "--layers", "1", "--hidden", "32", "--train-steps", "5", "--batch", "3",
                                  "--repeats", "1"])
    written = json.loads((out / "captum.json").read_text())
    assert written == json.loads(json.dumps(result))
    for key in ("texts", "steps", "max_rel_diff", "logit_max_diff", "ours_seconds_per_text", "captum_seconds_per_text"):
        assert key in written, key
    assert written["texts"] == 6 and written["steps"] == 8
    assert written["logit_max_diff"] <= 1e-4, "the converted weights compute the same logits"
    assert written["max_rel_diff"] <= 1e-3, "the same integrated gradients on both sides"
    assert written["ours_whole_last_layer_max_rel_diff"] <= 1e-3
    assert written["ours_seconds_per_text"] > 0 and written["captum_seconds_per_text"] > 0
