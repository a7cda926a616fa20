"""Greedy erasure (tig/erasure.py) against exact answers on real Keras layers, and as a first-class method."""
import numpy as np

from tig.erasure import greedy_erasure, grouped_drops, ordered_scores, pooled_nonincreasing, search_budget
from tig.methods import attribute, explain_texts
from test_evaluate import MARKER, marked_ids, marker_model
from test_peers import VOCAB, bag_of_characters, random_ids
from test_visualize import probe


def test_on_a_linear_model_the_chosen_scores_are_the_exact_weights_in_falling_order():
    # raw scores linear in the tokens present: deleting token i lowers F_t by exactly table[id_i, t],
    # so the exhaustive greedy search (every character a candidate) deletes the positive weights
    # largest first and scores each with its own weight; the negative ones it never chooses
    model, table = bag_of_characters()
    ids = random_ids()
    a = greedy_erasure(model, ids, share=1.0, candidates=VOCAB, samples=8)
    for i, t in enumerate(a.target):
        n = int((ids[i] != 0).sum())
        weights = table[ids[i, :n], t]
        positive = np.flatnonzero(weights > 0)
        np.testing.assert_allclose(a.scores[i, positive], weights[positive], rtol=1e-5, atol=1e-6)
        order = np.argsort(-a.scores[i, :n], kind="stable")
        assert np.all(np.diff(weights[order[:len(positive)]]) <= 1e-6)     # falling weights first
        assert set(order[:len(positive)]) == set(positive)
        assert np.all(a.scores[i, n:] == 0)
    assert a.method == "greedy-erasure" and a.delta is None                 # no completeness


def test_a_deletion_that_raises_the_score_joins_the_next_ones_until_they_lower_it():
    characters, values = grouped_drops([4, 1, 7, 2, 9], [0.5, -0.1, 0.3, -0.2, 0.1])
    assert characters == [4, 1, 7]                         # 9 and 2 together never lower F_t: left out
    np.testing.assert_allclose(values, [0.5, 0.1, 0.1])    # (-0.1 + 0.3) / 2 each
    assert grouped_drops([3], [-0.2]) == ([], [])


def test_scores_sort_in_the_deletion_order_and_keep_their_units():
    guide = np.array([0.9, 0.1, 0.5, -0.3, 0.05, 0.0], np.float32)
    scores = ordered_scores(guide, 6, chosen=[1, 0], drops=[0.2, 0.4])   # the second drop is larger
    assert list(np.argsort(-scores, kind="stable")[:2]) == [1, 0]
    assert scores[1] == np.float32(0.3) and scores[0] < scores[1] and scores[0] > 0.3 - 1e-6   # pooled
    assert abs(scores[0] + scores[1] - 0.6) < 1e-6                   # = F_t(x) - F_t(x - S)
    assert np.all(scores[[2, 4, 5]] < scores[0])          # the rest below the last chosen one
    assert scores[3] == guide[3] and scores[5] == guide[5]  # below the cap: unchanged
    assert np.array_equal(ordered_scores(guide, 6, [], []), guide)


def test_pooling_makes_the_drops_non_increasing_and_keeps_their_sum():
    np.testing.assert_allclose(pooled_nonincreasing([0.02, 0.05, 0.15, 0.1]), [0.08] * 4)
    np.testing.assert_allclose(pooled_nonincreasing([0.5, 0.1, 0.3, 0.05]), [0.5, 0.2, 0.2, 0.05])
    assert pooled_nonincreasing([0.3, 0.2, 0.1]) == [0.3, 0.2, 0.1]
    assert pooled_nonincreasing([]) == []


def test_search_budget_keeps_one_character():
    assert list(search_budget([0, 1, 2, 10, 11], 0.2)) == [0, 0, 1, 2, 3]
    assert list(search_budget([5], 1.0)) == [4]


def test_finds_the_marker_is_seeded_and_ignores_padding():
    model, ids = marker_model(), marked_ids()
    a = attribute(model, ids, "greedy-erasure", seed=3)
    assert np.all(ids[np.arange(len(ids)), a.scores.argmax(1)] == MARKER)
    assert np.array_equal(a.scores, attribute(model, ids, "greedy-erasure", seed=3).scores)
    wider = np.pad(ids, ((0, 0), (0, 8)))
    b = attribute(model, wider, "greedy-erasure", seed=3)
    np.testing.assert_allclose(b.scores[:, :ids.shape[1]], a.scores, atol=1e-6)
    assert np.all(b.scores[:, ids.shape[1]:] == 0)


def test_is_a_method_of_the_api_and_of_visualize(tiny_checkpoints, tmp_path, capsys):
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    [explained] = explain_texts(ckpt, ["房间很干净，服务也好"], "greedy-erasure")
    assert explained.method == "greedy-erasure" and len(explained.scores) == len(explained.tokens) == 10
    a = greedy_erasure(ckpt.model, ckpt.tokenizer.encode(["房间很干净"], ckpt.maxlen))
    shown = a.show(ckpt)                                  # the notebook display
    page = shown._repr_html_() if hasattr(shown, "_repr_html_") else str(shown)
    assert "greedy erasure" in page and "干" in page
    result = probe(capsys, "--method", "greedy-erasure", "--checkpoint", tiny_checkpoints["cnn"],
                   "--text", "房间很干净", "--format", "md", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "greedy erasure" in (tmp_path / "explanations.md").read_text(encoding="utf-8")
