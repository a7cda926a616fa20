"""One deletion for every method that deletes tokens, on the model's own padding side (tig/deletion.py).

The reference everywhere is independent of the code under test: the text with the characters removed,
encoded again by a tokenizer that pads the way the model was trained (keras' pad_sequences default: pre)."""
import keras
import numpy as np
import pytest
from keras import layers

from tig import faithfulness
from tig.deletion import delete_tokens, explained_positions, padding_side
from tig.errors import UserError
from tig.erasure import greedy_erasure
from tig.ig import integrated_gradients
from tig.perturbation import deletion_ig, deletion_surrogate, occlusion, stratified_masks
from tig.tokenizer import VocabularyTokenizer

VOCAB = ["<pad>", "<unk>"] + list("房间很干净服务也好早餐太差了")
MAXLEN = 12
TEXTS = ["房间很干净", "服务也好早餐太差了", "早餐太差", "很好", "房间服务干净也好了"]


def pre_tokenizer():
    return VocabularyTokenizer(VOCAB, level="char", padding="pre")


def position_model(seed=0):
    """A model that reads positions (Flatten over the sequence): a text shifted by one place scores differently,
    so a deletion that pads on the wrong side gives another number."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((MAXLEN,), dtype="int32")
    embedding = layers.Embedding(len(VOCAB), 4)
    x = embedding(ids)
    x = layers.Flatten()(x)
    x = layers.Dense(8, activation="tanh")(x)
    model = keras.Model(ids, layers.Dense(2, activation="softmax")(x))
    table = embedding.get_weights()[0]
    table[0] = 0.0          # PAD's embedding is the zero baseline, as in this project's models
    embedding.set_weights([table])
    return model


def probability(model, tokenizer, texts, target):
    probs = np.asarray(model.predict(tokenizer.encode(texts, MAXLEN), verbose=0), np.float64)
    return probs[np.arange(len(texts)), target]


def test_deleting_from_pre_padded_rows_closes_up_to_the_right():
    rows, moved = delete_tokens(np.array([0, 0, 0, 5, 6, 7]), [[True, False, True]], padding="pre")
    assert rows.tolist() == [[0, 0, 0, 0, 5, 7]] and moved.tolist() == [[4, -1, 5]]
    rows, moved = delete_tokens(np.array([5, 6, 7, 0, 0, 0]), [[True, False, True]], padding="post")
    assert rows.tolist() == [[5, 7, 0, 0, 0, 0]] and moved.tolist() == [[0, -1, 1]]
    # fixed tokens ([CLS]=2, [SEP]=3 of a KerasHub tokenizer) stay, in order, and are never counted
    rows, moved = delete_tokens(np.array([2, 5, 6, 3, 0]), [[False, True]], positions=[1, 2], padding="post")
    assert rows.tolist() == [[2, 6, 3, 0, 0]] and moved.tolist() == [[-1, 1]]
    assert [len(p) for p in explained_positions(np.array([[2, 5, 6, 3, 0], [0, 0, 0, 0, 0]]), fixed_ids=(0, 2, 3))] == [2, 0]


def test_deleting_ids_is_encoding_the_text_without_those_characters_on_either_side():
    rng = np.random.default_rng(0)
    for padding in ("pre", "post"):
        tokenizer = VocabularyTokenizer(VOCAB, level="char", padding=padding)
        for text in TEXTS:
            row = tokenizer.encode([text], MAXLEN)[0]
            keep = rng.random((6, len(text))) < 0.6
            expected = tokenizer.encode(["".join(c for c, k in zip(text, z) if k) for z in keep], MAXLEN)
            assert np.array_equal(delete_tokens(row, keep, padding=padding)[0], expected), (padding, text)


def test_the_padding_side_is_read_off_the_rows_or_given():
    assert padding_side(np.array([[0, 0, 5, 6], [0, 7, 8, 9]])) == "pre"
    assert padding_side(np.array([[5, 6, 0, 0], [7, 8, 9, 9]])) == "post"
    assert padding_side(np.array([[5, 6, 7, 8]]), "pre") == "pre"      # a full row reads as either
    with pytest.raises(UserError, match="both sides"):
        padding_side(np.array([[0, 0, 5, 6], [5, 6, 0, 0]]))


def test_occlusion_on_a_pre_padded_model_is_leave_one_out_on_the_text():
    model, tokenizer = position_model(), pre_tokenizer()
    ids = tokenizer.encode(TEXTS, MAXLEN)
    a = occlusion(model, ids)                                   # padding read off the rows
    b = occlusion(model, ids, padding="pre")
    np.testing.assert_array_equal(a.scores, b.scores)
    for i, text in enumerate(TEXTS):
        full = probability(model, tokenizer, [text], [a.target[i]])[0]
        without = probability(model, tokenizer, [text[:j] + text[j + 1:] for j in range(len(text))],
                              [a.target[i]] * len(text))
        np.testing.assert_allclose(a.scores[i, MAXLEN - len(text):], full - without, atol=1e-5)
        assert np.all(a.scores[i, :MAXLEN - len(text)] == 0.0)
    wrong = occlusion(model, ids, padding="post")               # the old behaviour: a different, wrong answer
    assert not np.allclose(wrong.scores, a.scores, atol=1e-4)


def test_deletion_ig_on_a_pre_padded_model_is_the_mean_of_ig_over_deleted_texts():
    """The same masks; each deleted text made from the string and encoded as the model's tokenizer pads it;
    integrated_gradients on it; each kept character's score put back and averaged."""
    model, tokenizer = position_model(), pre_tokenizer()
    ids = tokenizer.encode(TEXTS, MAXLEN)
    a = deletion_ig(model, ids, samples=12, steps=2, seed=3)
    rng = np.random.default_rng(3)
    for i, text in enumerate(TEXTS):
        n = len(text)
        total, count = np.zeros(n), np.zeros(n)
        for z in stratified_masks(n, 12, rng):
            deleted = tokenizer.encode(["".join(c for c, k in zip(text, z) if k)], MAXLEN)
            ig = integrated_gradients(model, deleted, [a.target[i]], baseline="zero", steps=2).scores[0]
            total[np.flatnonzero(z)] += ig[MAXLEN - z.sum():]
            count += z
        np.testing.assert_allclose(a.scores[i, MAXLEN - n:], total / count, rtol=1e-4, atol=1e-6)
        assert np.all(a.scores[i, :MAXLEN - n] == 0.0)


def test_greedy_erasure_deletes_on_the_models_side():
    """Its first choice is the character whose deletion lowers F_t most, measured on the re-encoded text."""
    model, tokenizer = position_model(), pre_tokenizer()
    ids = tokenizer.encode(TEXTS, MAXLEN)
    a = greedy_erasure(model, ids, samples=10, candidates=MAXLEN)
    for i, text in enumerate(TEXTS):
        without = probability(model, tokenizer, [text[:j] + text[j + 1:] for j in range(len(text))],
                              [a.target[i]] * len(text))
        if len(text) > 1:
            assert np.argmax(a.scores[i, MAXLEN - len(text):]) == np.argmin(without), text
        assert np.all(a.scores[i, :MAXLEN - len(text)] == 0.0)


def test_the_surrogate_with_completeness_adds_up_on_a_pre_padded_model():
    model, tokenizer = position_model(), pre_tokenizer()
    ids = tokenizer.encode(TEXTS, MAXLEN)
    a = deletion_surrogate(model, ids, samples=64, complete=True, link="identity")
    empty = probability(model, tokenizer, [""] * len(TEXTS), a.target)
    np.testing.assert_allclose(a.baseline_output, empty, atol=1e-5)     # the empty text, padded as the model pads
    np.testing.assert_allclose(a.scores.sum(1), a.output - a.baseline_output, atol=1e-4)


def test_comprehensiveness_on_a_pre_padded_model_equals_an_independent_computation():
    model, tokenizer = position_model(), pre_tokenizer()
    ids = tokenizer.encode(TEXTS, MAXLEN)
    rng = np.random.default_rng(1)
    scores = np.where(ids != 0, rng.random(ids.shape), 0.0)
    target = np.asarray(model.predict(ids, verbose=0)).argmax(-1)

    def predict(rows):
        return np.asarray(model.predict(rows, verbose=0), np.float64)
    got = faithfulness.faithfulness(predict, ids, scores, target, padding="pre")
    expected = {}
    for k in faithfulness.KS:
        drops = []
        for i, text in enumerate(TEXTS):
            real = scores[i, MAXLEN - len(text):]
            top = np.argsort(-real, kind="stable")[:faithfulness.top_count(len(text), k)]
            rest = "".join(c for j, c in enumerate(text) if j not in set(top))
            drops.append(probability(model, tokenizer, [text], [target[i]])[0]
                         - probability(model, tokenizer, [rest], [target[i]])[0])
        expected[k] = np.mean(drops)
    for k in faithfulness.KS:
        assert got["comprehensiveness"][k] == pytest.approx(expected[k], abs=1e-5)
    assert got == faithfulness.faithfulness(predict, ids, scores, target)          # read off the rows: the same
