"""Perturbation methods (tig/perturbation.py) against exact answers, and the LIME/shap adapters (tig/peers.py)."""
import json

import numpy as np

from tig import faithfulness
import pytest
import keras
from keras import layers, ops

import evaluate
from tig import peers
from tig.model import ZeroPadding, build_embedder, compose
from tig.ig import integrated_gradients
from tig.deletion import delete_tokens
from tig.perturbation import (deletion_ig, deletion_surrogate, occlusion, sample_masks, spread_back,
                          stratified_masks)
from test_cli import assert_clean_failure, in_process
from test_evaluate import MARKER, marked_ids, marker_model
from tig.tokenizer import RESERVED, Tokenizer

VOCAB, CLASSES = 30, 2


class SumPool(layers.Layer):
    def call(self, x):
        return ops.sum(x, axis=1)


def bag_of_characters(seed=0, activation=None):
    """Raw class scores F_c(x) = b_c + sum over the text's tokens of table[id, c]: linear in which
    tokens are present, so deleting token i changes F_c by exactly table[id_i, c]
    (activation="softmax": the probabilities of those scores, no longer linear)."""
    embedder = build_embedder(VOCAB, CLASSES)
    table = np.random.default_rng(seed).normal(size=(VOCAB, CLASSES)).astype("float32")
    table[0] = 0.0
    embedder.get_layer("embedding").set_weights([table])
    embeddings, mask = keras.Input((None, CLASSES)), keras.Input((None,), dtype="bool")
    dense = layers.Dense(CLASSES, activation=activation)
    out = dense(SumPool()(ZeroPadding()(embeddings, mask)))
    dense.set_weights([np.eye(CLASSES, dtype="float32"), np.array([0.3, -0.2], "float32")])
    return compose(embedder, keras.Model([embeddings, mask], out, name="head")), table


def random_ids(n=5, length=20, seed=2):
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), np.int32)
    for i, real in enumerate(rng.integers(1, length - 3, size=n)):
        ids[i, :real] = rng.integers(3, VOCAB, size=real)
    return ids


def test_deleting_ids_is_retokenising_the_string_without_those_characters():
    chars = list("房间很干净服务也好早餐太差了，！前台")
    tokenizer = Tokenizer(RESERVED + chars[:12])          # the rest are unknown (UNK)
    rng = np.random.default_rng(0)
    maxlen = 24
    for _ in range(40):
        text = "".join(rng.choice(chars, size=rng.integers(1, maxlen)))
        ids = tokenizer.encode([text], maxlen)[0]
        keep = rng.random((8, len(text))) < rng.random()
        expected = tokenizer.encode(["".join(c for c, k in zip(text, row) if k) for row in keep], maxlen)
        assert np.array_equal(delete_tokens(ids, keep)[0], expected), text
        for row in keep:      # and exactly what evaluate.py's metric deletes
            assert np.array_equal(delete_tokens(ids, row[None])[0][0],
                                  faithfulness.perturb(ids, np.flatnonzero(~row), "delete"))


def test_the_surrogate_recovers_a_linear_models_weights_exactly():
    model, table = bag_of_characters()
    ids = random_ids()
    for complete in (False, True):
        a = deletion_surrogate(model, ids, samples=64, ridge=0.0, complete=complete, link="identity")
        expected = np.where(ids != 0, table[ids, a.target[:, None]], 0.0)
        np.testing.assert_allclose(a.scores, expected, atol=2e-4)
        assert np.all(a.scores[ids == 0] == 0.0)
    assert a.delta is not None and np.max(np.abs(a.delta)) < 1e-4    # F(x) - F(empty) = sum of the scores
    b = occlusion(model, ids)
    np.testing.assert_allclose(b.scores, expected, atol=2e-4)
    assert b.method == "occlusion" and b.delta is None


def test_the_surrogate_is_seeded_and_finds_the_marker():
    model, ids = marker_model(), marked_ids()
    a = deletion_surrogate(model, ids, samples=100, seed=1)
    assert np.array_equal(a.scores, deletion_surrogate(model, ids, samples=100, seed=1).scores)
    assert not np.array_equal(a.scores, deletion_surrogate(model, ids, samples=100, seed=2).scores)
    assert np.all(ids[np.arange(len(ids)), a.scores.argmax(1)] == MARKER)
    masks = sample_masks(12, 500, np.random.default_rng(0))
    assert masks[0].all() and masks[1:].sum(1).min() >= 1 and masks[1:].sum(1).max() <= 11


def test_deletion_ig_recovers_a_linear_models_weights_exactly():
    """IG is exact for a model linear in the embeddings, in every deletion context, so the average
    over contexts is each token's own weight; a token credited at another position fails."""
    model, table = bag_of_characters()
    ids = random_ids()
    for steps in (1, 2):
        a = deletion_ig(model, ids, samples=16, steps=steps)
        expected = np.where(ids != 0, table[ids, a.target[:, None]], 0.0)
        np.testing.assert_allclose(a.scores, expected, atol=2e-4)
    assert a.method == "deletion-ig" and a.delta is None     # no completeness for x


def test_deletion_ig_is_the_mean_of_ig_over_the_contexts_that_keep_each_token():
    """Against a direct computation on a nonlinear model (softmax of a bag of characters, where every
    token's IG depends on the others kept): the same masks, integrated_gradients run on each deleted
    text one by one, each kept token's score put back at its original position and averaged."""
    model, _ = bag_of_characters(activation="softmax")
    ids = random_ids()
    a = deletion_ig(model, ids, samples=12, steps=2, seed=3)
    rng = np.random.default_rng(3)
    for i, row in enumerate(ids):
        n = int((row != 0).sum())
        keep = stratified_masks(n, 12, rng)
        total, count = np.zeros(n), np.zeros(n)
        for z in keep:
            deleted = delete_tokens(row, z[None])[0]
            ig = integrated_gradients(model, deleted, [a.target[i]], baseline="zero", steps=2).scores[0]
            total[np.flatnonzero(z)] += ig[:z.sum()]
            count += z
        np.testing.assert_allclose(a.scores[i, :n], total / count, rtol=1e-4, atol=1e-6)
        assert np.all(a.scores[i, n:] == 0)
    assert np.array_equal(a.scores, deletion_ig(model, ids, samples=12, steps=2, seed=3).scores)      # seeded
    assert not np.allclose(a.scores, deletion_ig(model, ids, samples=12, steps=2, seed=4).scores)


def test_deletion_ig_finds_the_marker():
    model, ids = marker_model(), marked_ids()
    a = deletion_ig(model, ids)
    assert np.all(ids[np.arange(len(ids)), a.scores.argmax(1)] == MARKER)


def test_stratified_masks_spread_the_deletion_counts():
    rng = np.random.default_rng(0)
    masks = stratified_masks(9, 8, rng)                # hi = 8 strata of one count each: 1..8 deleted once
    assert masks[0].all() and sorted((~masks[1:]).sum(1)) == list(range(1, 9))
    half = stratified_masks(10, 50, rng, max_rate=0.5)
    assert (~half[1:]).sum(1).min() == 1 and (~half[1:]).sum(1).max() == 5
    assert np.bincount((~half[1:]).sum(1))[1:].tolist() == [10] * 5
    assert stratified_masks(1, 5, rng).tolist() == [[True]]
    moved = np.array([[0, -1, 1], [-1, 0, 1]])           # where each kept token sits in its deleted copy
    np.testing.assert_array_equal(spread_back(moved, np.array([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])),
                                  [[1.0, 0.0, 2.0], [0.0, 3.0, 4.0]])


def marker_strings():
    """The marker model behind a character tokenizer: '标' is the marker, id MARKER."""
    chars = [chr(0x4e00 + i) for i in range(20 - len(RESERVED))]
    chars[MARKER - len(RESERVED)] = "标"
    tokenizer = Tokenizer(RESERVED + chars)
    model = marker_model()
    texts = ["".join(tokenizer.vocab[i] for i in row if i) for row in marked_ids(n=3)]
    predict = lambda strings: np.asarray(model(tokenizer.encode(list(strings), 16)))
    return predict, texts, tokenizer


@pytest.mark.parametrize("name", peers.PEERS)
def test_peers_delete_characters_and_find_the_marker(name):
    if peers.missing(name):
        pytest.skip(peers.missing(name))
    predict, texts, tokenizer = marker_strings()
    seen = []

    def recording(strings):
        seen.extend(strings)
        return predict(strings)
    target = np.ones(len(texts), int)
    scores = (peers.lime_scores(recording, texts, target, 16, samples=200) if name == "lime"
              else peers.shap_scores(recording, texts, target, 16, evals=60))
    for text, row in zip(texts, scores):
        assert text[int(np.argmax(row[:len(text)]))] == "标"
        assert np.all(row[len(text):] == 0)
    # every string the model saw is the text with characters deleted: a subsequence, nothing inserted
    for s in seen:
        assert peers.SENTINEL not in s and " " not in s and "UNKWORDZ" not in s
        assert any(is_subsequence(s, t) for t in texts), s


def is_subsequence(short, text):
    it = iter(text)
    return all(c in it for c in short)


def test_a_missing_peer_is_one_line(monkeypatch, capsys):
    import sys
    for name in peers.PEERS:      # None in sys.modules: `import name` raises ImportError, as when not installed
        monkeypatch.setitem(sys.modules, name, None)
    for name in peers.PEERS:
        message = peers.missing(name)
        assert message and "\n" not in message and f"pip install {name}" in message
    assert peers.installed() == []
    assert_clean_failure(in_process(capsys, evaluate.main, "--task", "hotel", "--methods", "lime",
                                    "--data-dir", "/nonexistent"), "lime is not installed")


def test_evaluate_reports_seconds_per_text(tiny_checkpoints, data_dir, tmp_path, capsys):
    result = in_process(capsys, evaluate.main, "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", data_dir,
                        "-n", "6", "--methods", "gradxinput,occlusion,surrogate,deletion-ig,greedy-erasure,random", "--surrogate-samples", "50",
                        "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    methods = json.loads((tmp_path / "faithfulness.json").read_text(encoding="utf-8"))["methods"]
    assert set(methods) == {"gradxinput", "occlusion", "surrogate", "deletion-ig", "greedy-erasure", "random"}
    assert all(methods[m]["seconds_per_text"] > 0 for m in ("gradxinput", "occlusion", "surrogate", "deletion-ig", "greedy-erasure"))
    assert methods["random"]["seconds_per_text"] == 0
    assert "| s/text |" in result.stdout


def test_the_table_gives_each_methods_seconds_as_a_multiple_of_limes():
    row = dict(comprehensiveness_aopc=0.5, comprehensiveness_20=0.6, sufficiency_aopc=0.0, sufficiency_20=0.0,
               log_odds_20=-1.0, deletion_auc=0.2, same_top_token_as_first=1.0)
    results = {"steps": 50, "methods": {"greedy-erasure": dict(row, seconds_per_text=0.2),
                                        "lime": dict(row, seconds_per_text=0.8)}}
    lines = evaluate.markdown_table(results).splitlines()
    assert lines[0].endswith("| s/text | × LIME |") and lines[1].count("---") == 11
    assert lines[2].endswith("| 0.2 | 0.25 |") and lines[3].endswith("| 0.8 | 1.00 |")
    del results["methods"]["lime"]
    assert "× LIME" not in evaluate.markdown_table(results)
