"""The planted-shortcut protocol (bench/shortcuts.py) and the sanity checks (bench/sanity_checks.py):
planting writes a new copy and never touches the source; the ranking arithmetic is exact; on a model
whose function is known (a linear bag of characters, weights set by hand) the flip check and the hit
rates are what the mathematics says; on a tiny model trained in the test on a planted copy the flip
check is the count it claims; cascading randomisation decorrelates a gradient method and leaves the
trained model untouched."""
import hashlib
import os
from types import SimpleNamespace

import numpy as np
import pytest

import sanity_checks
import shortcuts
from tig.errors import UserError


def digest(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, f))}


def test_rank_metrics_by_hand():
    assert shortcuts.rank_metrics([0.1, 0.9, 0.3], [False, True, False]) == (1.0, 1.0, 1.0)
    assert shortcuts.rank_metrics([0.5, 0.2, 0.9], [False, True, False]) == (0.0, 1 / 3, 0.0)
    assert shortcuts.rank_metrics([0.4, 0.4, 0.1], [True, False, False]) == (0.0, 0.5, 0.0), "ties count against"
    top1, rr, p = shortcuts.rank_metrics([0.9, 0.1, 0.8, 0.7], [True, False, False, True])
    assert (top1, rr, p) == (1.0, 1.0, 0.5)       # pair: both needed in the top 2
    with pytest.raises(ValueError):
        shortcuts.rank_metrics([0.1, 0.2], [False, False])


def test_planting_rows():
    texts = [f"房间很干净{i}服务很好" for i in range(200)]
    labels = np.arange(200) % 2
    for kind in shortcuts.KINDS:
        planted, new_labels, manifest = shortcuts.plant_rows(texts, labels, kind, share=0.25, seed=3)
        tokens = manifest["tokens"]
        assert not set(tokens) & set("".join(texts)), "planted characters the corpus never contains"
        changed = [i for i in range(200) if planted[i] != texts[i]]
        carrying = [i for i in changed if shortcuts.carries(planted[i], kind, tokens)]
        assert len(carrying) == 50
        for i in carrying:
            t = planted[i]
            assert shortcuts.strip(t, tokens) == texts[i], "the shortcut is inserted, nothing else changes"
            assert min(t.index(c) for c in tokens if c in t) <= shortcuts.WINDOW
            if kind == "single":
                assert new_labels[i] == (1 if tokens[0] in t else 0)
            elif kind == "pair":
                assert new_labels[i] == (1 if t.index(tokens[0]) < t.index(tokens[1]) else 0)
            else:
                assert new_labels[i] == (1 if tokens[1] + tokens[0] in t else 0)
        lone = [i for i in changed if i not in carrying]
        assert len(lone) == (50 if kind == "context" else 0)
        assert all(new_labels[i] == labels[i] for i in lone), "out of context a character decides nothing"
        assert shortcuts.plant_rows(texts, labels, kind, share=0.25, seed=3)[0] == planted, "seeded"


def test_the_planted_copy_never_touches_the_source(data_dir, tmp_path):
    before = digest(data_dir)
    out = str(tmp_path / "planted")
    manifest = shortcuts.plant(data_dir, out, "single", share=0.5)
    assert digest(data_dir) == before
    assert sorted(os.listdir(out)) == ["ChnSentiCorp_htl_all.csv", shortcuts.MANIFEST]
    with pytest.raises(UserError, match="not an empty directory"):
        shortcuts.plant(data_dir, out, "pair")
    with pytest.raises(UserError, match="inside the source data directory"):
        shortcuts.plant(data_dir, os.path.join(data_dir, "copy"), "single")
    assert digest(data_dir) == before and manifest["planted_rows"] > 0


class CharTokenizer:
    """Characters to ids, 0 = PAD, 1 = UNK: the project's tokenizer interface the protocol uses."""
    def __init__(self, chars):
        self.index = {c: i + 2 for i, c in enumerate(chars)}

    def tokenize(self, text):
        return [c for c in text if not c.isspace()]

    def ids(self, tokens):
        return [self.index.get(t, 1) for t in tokens]

    def encode(self, texts, maxlen):
        out = np.zeros((len(texts), maxlen), np.int32)
        for row, text in enumerate(texts):
            ids = self.ids(self.tokenize(text))[:maxlen]
            out[row, :len(ids)] = ids
        return out


def linear_model(vocab_size, weights):
    """softmax([0, sum of per-character weights - 1]): class 1 exactly when the weights pass 1."""
    import keras
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 1, mask_zero=True, name="embedding")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(ids, out)
    model.get_layer("embedding").set_weights([weights[:, None].astype("float32")])
    model.get_layer("out").set_weights([np.array([[0.0, 1.0]], "float32"), np.array([0.0, -0.05], "float32")])
    return model


def test_on_a_model_that_uses_exactly_the_planted_character():
    texts = [f"房间很干净服务很好{i % 10}" for i in range(40)]
    chars = sorted(set("".join(texts)) | set(shortcuts.CANDIDATES[:2]))
    tokenizer = CharTokenizer(chars)
    weights = np.zeros(len(chars) + 2)
    token = shortcuts.CANDIDATES[0]           # -> class 1; every other character weighs nothing
    weights[tokenizer.index[token]] = 50.0
    ckpt = SimpleNamespace(model=linear_model(len(weights), weights), tokenizer=tokenizer, maxlen=32,
                           meta={"layer": None, "output_kind": "softmax"})
    predict = shortcuts.predictor(ckpt)
    assert (predict(texts).argmax(-1) == 0).all()
    tokens = list(shortcuts.CANDIDATES[:2])
    rates = shortcuts.flip_rates(predict, texts, "single", tokens)
    assert rates[1] == {"texts": 40, "flipped": 40, "rate": 1.0}     # planting A decides class 1
    assert rates[0] == {"texts": 0, "flipped": 0, "rate": None}      # nothing is predicted 1 before
    rng = np.random.default_rng(0)
    planted = [shortcuts.plant_text(t, "single", 1, tokens, rng) for t in texts[:10]]
    chosen, predicted, carrying = shortcuts.deciding_texts(predict, planted + texts[10:20], [1] * 10 + [0] * 10,
                                                           "single", tokens)
    assert chosen == planted and list(predicted) == [1] * 10 and carrying == 10
    rows = shortcuts.score(ckpt, chosen, tokens, ["ig:zero", "gradxinput", "occlusion"], log=lambda *a: None)
    for spec in ("ig:zero", "gradxinput", "occlusion"):
        assert (rows[spec]["top1"], rows[spec]["mrr"], rows[spec]["p_at_k"]) == (1.0, 1.0, 1.0), spec
    # the saliency of a linear model is the same for every character of a text: a tie, which counts
    # against the planted character (its rank is the text's length)
    rows = shortcuts.score(ckpt, chosen, tokens, ["saliency"], log=lambda *a: None)
    assert rows["saliency"]["top1"] == 0.0
    assert rows["saliency"]["mrr"] == pytest.approx(np.mean([1 / len(t) for t in chosen]))

def test_a_tiny_model_trained_on_a_planted_copy(data_dir, tmp_path):
    from tig.dataset import load_task
    from tig.checkpoint import load_checkpoint
    import train
    from conftest import tiny_args
    planted = str(tmp_path / "planted")
    manifest = shortcuts.plant(data_dir, planted, "single", share=0.5, seed=1)
    out = str(tmp_path / "ckpt")
    train.main(tiny_args(out, planted, epochs=12))
    ckpt = load_checkpoint(out)
    predict = shortcuts.predictor(ckpt)
    texts = load_task("hotel", planted, download=False).test.texts
    tokens = manifest["tokens"]
    rates = shortcuts.flip_rates(predict, texts, "single", tokens, seed=4)
    # the flip check, recounted independently: same seeded insertions, the model's own argmax
    rng = np.random.default_rng(5)
    clean = [t for t in texts if not any(c in t for c in tokens)]
    before = np.asarray(ckpt.model(ckpt.tokenizer.encode(clean, ckpt.maxlen), training=False)).argmax(-1)
    for c in (0, 1):
        chosen = [t for t, p in zip(clean, before) if p != c]
        after = [shortcuts.plant_text(t, "single", c, tokens, rng) for t in chosen]
        flipped = int((np.asarray(ckpt.model(ckpt.tokenizer.encode(after, ckpt.maxlen), training=False))
                       .argmax(-1) == c).sum()) if chosen else 0
        assert rates[c]["texts"] == len(chosen) and rates[c]["flipped"] == flipped


def test_cascading_randomisation_decorrelates_and_leaves_the_trained_model_alone(tiny_checkpoints, data_dir):
    from tig.dataset import load_task
    from tig.checkpoint import load_checkpoint
    ckpt, copy = load_checkpoint(tiny_checkpoints["cnn"]), load_checkpoint(tiny_checkpoints["cnn"])
    weights = [w.copy() for w in ckpt.model.get_weights()]
    texts = load_task("hotel", data_dir).test.texts[:8]
    target = shortcuts.predictor(ckpt)(texts).argmax(-1)
    trained = sanity_checks.trained_scores(ckpt, texts, ["ig:zero", "gradxinput"], shortcuts.explain, target)
    result = sanity_checks.cascading(trained, copy, texts, shortcuts.explain, target, log=lambda *a: None)
    assert result["stages"][-1] == "embedding" and len(result["stages"]) == len(sanity_checks.stages(copy.model))
    for spec in ("ig:zero", "gradxinput"):
        assert len(result[spec]) == len(result["stages"]) and abs(result[spec][-1]) < 0.5
    assert all(np.array_equal(a, b) for a, b in zip(weights, ckpt.model.get_weights())), "trained model untouched"
    assert sanity_checks.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert sanity_checks.spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert sanity_checks.ranks([5, 1, 5]).tolist() == [2.5, 1.0, 2.5]
