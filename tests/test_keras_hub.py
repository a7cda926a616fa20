"""KerasHub models explained as themselves: BertTextClassifier and DistilBertTextClassifier built
from config (tiny backbones, a character vocabulary made from real hotel reviews, no preset
download), with and without their preprocessor, and keras_hub's TokenAndPositionEmbedding
(mask_zero=True) + TransformerEncoder on padded ids.

The reference is independent of the project's interception: the model runs through its own
public `stateless_call` with a modified copy of its token-embedding table, in which the rows of
the text tokens are scaled by alpha (special tokens keep theirs), and the gradient is taken with
respect to that table. The gradient of a table row sums over every position holding that token,
so the reference gives per-token-type sums, compared with the per-position scores summed by type.
"""
import functools
import os

import numpy as np

from tig import faithfulness
import pytest

keras_hub = pytest.importorskip("keras_hub")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tig.errors import UserError  # noqa: E402
from conftest import SHARED_DATA, skip_or_fail  # noqa: E402
from tig.saliency import gradients  # noqa: E402
from tig.ig import integrated_gradients  # noqa: E402

SEQUENCE = 24
STEPS = 32
TEXTS = ["房间很干净，服务也很周到", "太差了，不会再来", "位置不错，早餐一般", "很好很好很好"]


@functools.cache
def hotel():
    if not os.path.exists(os.path.join(SHARED_DATA, "ChnSentiCorp_htl_all.csv")):
        skip_or_fail("../shared/data is not present")
    from tig.dataset import load_task
    train = load_task("hotel", SHARED_DATA).train
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.texts), 256, replace=False)
    texts = [train.texts[i][:SEQUENCE] for i in pick]
    return texts, np.array([int(train.labels[i]) for i in pick]), None


def train_task(family, seed):
    """A tiny KerasHub text classifier of `family` ("bert" or "distil_bert") with its preprocessor,
    made by keras_hub_example.py from config and fitted briefly on real hotel reviews."""
    from tig import hub
    texts, labels, vocab = hotel()
    return hub.train(texts, labels, vocab_texts=TEXTS, family=family, sequence=SEQUENCE, dim=16,
                                   layers=1, seed=seed, epochs=6, batch_size=16)


@functools.cache
def saved_task(family, seed=0):
    import tempfile
    path = os.path.join(tempfile.mkdtemp(prefix="tig_hub_"), f"{family}.keras")
    train_task(family, seed).save(path)
    return path


def load(path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.saving.load_model(path)


def token_table(model, layer=None):
    layer = layer or model.backbone.token_embedding
    index = [i for i, v in enumerate(model.trainable_variables) if v is layer.embeddings]
    assert len(index) == 1
    return index[0], layer.embeddings.numpy()


def reference_by_table(model, features, fixed_ids, target, steps=STEPS, layer=None):
    """Per text, {token id: IG summed over its positions}: the model's own stateless_call with the
    text tokens' rows of the embedding table scaled by alpha (Gauss-Legendre nodes on [0, 1]),
    d logit_target / d table, times the table row. No interception, weights untouched."""
    index, table = token_table(model, layer)
    variables = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    nodes, weights = (nodes + 1) / 2, weights / 2
    out = []
    all_ids = np.asarray(features["token_ids"] if isinstance(features, dict) else features)
    for row in range(len(all_ids)):
        one = ({k: tf.constant(np.asarray(v)[row:row + 1]) for k, v in features.items()}
               if isinstance(features, dict) else tf.constant(all_ids[row:row + 1]))
        ids = all_ids[row]
        text = np.array([i not in fixed_ids for i in range(len(table))])
        text_ids = sorted({int(i) for i in ids if i not in fixed_ids})
        total = np.zeros_like(table, np.float64)
        for a, w in zip(nodes, weights):
            scaled = tf.constant(np.where(text[:, None], a * table, table).astype(np.float32))
            with tf.GradientTape() as tape:
                tape.watch(scaled)
                values = list(variables)
                values[index] = scaled
                logits, _ = model.stateless_call(values, frozen, one, training=False)
                selected = logits[0, int(target[row])] if logits.shape[-1] > 1 else logits[0, 0] * (
                    1 if target[row] == 1 else -1)
            total += w * tf.convert_to_tensor(tape.gradient(selected, scaled)).numpy()   # IndexedSlices
        out.append({i: float((table[i] * total[i]).sum()) for i in text_ids})
    return out


def per_type(scores, ids):
    sums = {}
    for score, i in zip(scores, ids):
        sums[int(i)] = sums.get(int(i), 0.0) + float(score)
    return sums


def assert_matches_reference(ig, reference, fixed_ids):
    for row, expected in enumerate(reference):
        got = per_type(ig.scores[row], ig.token_ids[row])
        scale = max(abs(v) for v in expected.values())
        for i, value in expected.items():
            assert abs(got[i] - value) <= 1e-4 * scale + 1e-7, (row, i, got[i], value)
        for i in fixed_ids:
            assert got.get(i, 0.0) == 0.0


@pytest.mark.parametrize("family", ["bert", "distil_bert"])
def test_task_with_preprocessor_on_strings(family):
    model = load(saved_task(family))
    tokenizer = model.preprocessor.tokenizer
    special = set(int(i) for i in tokenizer.special_token_ids)
    before = [w.copy() for w in model.get_weights()]
    ig = integrated_gradients(model, TEXTS, steps=STEPS)
    features = {k: v.numpy() for k, v in model.preprocessor(tf.constant(TEXTS)).items()}
    logits = np.asarray(model.predict(TEXTS, verbose=0))
    # the explained function is the model's own: F(x) is its logit of the target class
    assert ig.output_kind == "raw" and ig.layer == "token_embedding"
    np.testing.assert_allclose(ig.probs, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ig.output, logits[np.arange(len(TEXTS)), ig.target], rtol=1e-5, atol=1e-5)
    assert np.abs(logits[:, 1] - logits[:, 0]).max() > 0.05, "the model did not learn anything"
    # the tokenizer's tokens, [CLS] ... [SEP]; special tokens score exactly 0.0
    np.testing.assert_array_equal(ig.token_ids, features["token_ids"])
    assert ig.tokens[0] == ["[CLS]"] + list(TEXTS[0]) + ["[SEP]"]
    assert np.all(ig.scores[np.isin(ig.token_ids, list(special))] == 0.0)
    # completeness against F(x) - F(x') with x' = specials kept, text tokens at zero
    np.testing.assert_allclose(ig.scores.sum(1), ig.output - ig.baseline_output - ig.delta, atol=1e-5)
    auto = integrated_gradients(model, TEXTS, steps="auto")
    assert np.abs(auto.output - auto.baseline_output).min() > 1e-3, "the text tokens hardly move the logit"
    assert np.all(auto.complete()), auto.delta / (auto.output - auto.baseline_output)
    np.testing.assert_array_equal(auto.baseline_output, ig.baseline_output)
    assert_matches_reference(ig, reference_by_table(model, features, special, ig.target), special)
    # a dict of arrays, as the preprocessor makes it: the same explanation
    on_dict = integrated_gradients(model, features, steps=STEPS)
    np.testing.assert_allclose(on_dict.scores, ig.scores, atol=1e-7)
    grad = gradients(model, TEXTS)
    assert np.all(grad.scores[np.isin(grad.token_ids, list(special))] == 0.0) and np.any(grad.scores != 0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all("call" not in l.__dict__ for l in model._flatten_layers())


def test_task_without_preprocessor_on_ids():
    """Saved without its preprocessor: plain ids (padding_mask from the padding id, segment_ids 0)
    or a dict; with no tokenizer, only the padding id is held fixed."""
    with_pre = load(saved_task("bert"))
    features = {k: v.numpy() for k, v in with_pre.preprocessor(tf.constant(TEXTS)).items()}
    bare = keras_hub.models.BertTextClassifier(with_pre.backbone, num_classes=2, preprocessor=None)
    bare.get_layer("logits").set_weights(with_pre.get_layer("logits").get_weights())
    with pytest.raises(UserError, match="without its preprocessor"):
        integrated_gradients(bare, TEXTS, steps=4)
    ig = integrated_gradients(bare, features["token_ids"], steps=STEPS)
    on_dict = integrated_gradients(bare, features, steps=STEPS)
    np.testing.assert_allclose(on_dict.scores, ig.scores, atol=1e-7)
    np.testing.assert_allclose(ig.probs, np.asarray(with_pre.predict(TEXTS, verbose=0)), rtol=1e-5, atol=1e-5)
    assert np.all(ig.scores[features["token_ids"] == 0] == 0.0)
    assert_matches_reference(ig, reference_by_table(bare, features, {0}, ig.target), {0})


# --- TokenAndPositionEmbedding(mask_zero=True) + TransformerEncoder ------------------------

VOCAB, L = 60, 20


def padded_ids(seed=0, batch=5):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, L)).astype(np.int32)
    for row, n in enumerate((L, 12, 5, 9, 3)[:batch]):
        ids[row, n:] = 0
    return ids


def masked_encoder(seed=0, rate=0.0):
    """keras-io's FNet/transformer-example layers: keras_hub's TokenAndPositionEmbedding with
    mask_zero=True, whose ReversibleEmbedding sets the padding mask inside its call, then
    TransformerEncoder, which reads that mask."""
    keras.utils.set_random_seed(seed)
    ids_in = keras.Input((L,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(VOCAB, L, 16, mask_zero=True, name="embed")(ids_in)
    x = keras_hub.layers.TransformerEncoder(32, 2, dropout=rate)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(ids_in, keras.layers.Dense(2, activation="softmax")(x))
    ids = padded_ids(100, 5).repeat(40, 0)
    labels = (ids[:, :3].sum(1) > 3 * VOCAB // 2).astype(int)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(ids, labels, epochs=3, batch_size=40, verbose=0)
    return model


def test_token_and_position_embedding_mask_zero_is_explained_as_itself():
    model = masked_encoder()
    ids = padded_ids()
    probs = np.asarray(model(ids, training=False))
    assert model.get_layer("embed").token_embedding.mask_zero
    ig = integrated_gradients(model, ids, steps=STEPS)
    np.testing.assert_allclose(ig.probs, probs, rtol=1e-5, atol=1e-6)
    assert np.all(ig.scores[ids == 0] == 0.0)
    auto = integrated_gradients(model, ids, steps="auto")
    assert np.all(auto.complete()) and np.all(auto.scores[ids == 0] == 0.0), auto.steps
    reference = reference_by_table(model, ids, {0}, ig.target, layer=model.get_layer("embed").token_embedding)
    assert_matches_reference(ig, reference, {0})
    np.testing.assert_allclose(gradients(model, ids).probs, probs, rtol=1e-5, atol=1e-6)


def test_a_split_that_is_not_the_model_is_refused(monkeypatch):
    """Losing the mask (what the interception did before it copied the layer's own mask) and a
    model that is random at inference: both refused with the layer's name, never explained."""
    from tig import embedding_split
    model = masked_encoder(seed=1)
    monkeypatch.setattr(embedding_split, "get_keras_mask", lambda tensor: None)
    with pytest.raises(UserError, match="'token_embedding' does not compute the model's own function"):
        integrated_gradients(model, padded_ids(), steps=4)
    with pytest.raises(UserError, match="'token_embedding'"):
        gradients(model, padded_ids())
    from tig.attribution import class_scores
    from tig.perturbation import occlusion
    with pytest.raises(UserError, match="'token_embedding' does not compute"):    # the perturbation path too
        class_scores(model, padded_ids())
    with pytest.raises(UserError, match="'token_embedding' does not compute"):
        occlusion(model, padded_ids())
    monkeypatch.undo()

    keras.utils.set_random_seed(2)
    ids_in = keras.Input((L,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8, name="tokens")(ids_in)
    x = keras.layers.Lambda(lambda t: t + keras.random.normal(keras.ops.shape(t), stddev=0.5))(
        keras.layers.GlobalAveragePooling1D()(x))      # noise at inference: a random model
    random_model = keras.Model(ids_in, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(UserError, match="'tokens' does not compute the model's own function"):
        integrated_gradients(random_model, padded_ids(), steps=4)
    with pytest.raises(UserError, match="'tokens' does not compute the model's own function"):
        class_scores(random_model, padded_ids())


def test_visualize_command_on_a_task_saved_with_its_preprocessor(tmp_path, capsys):
    """visualize.py --model on a saved BertTextClassifier: no --vocab (its preprocessor tokenizes),
    the tokenizer's tokens shown, the caption says a logit is explained, no Keras warning printed."""
    import visualize
    from test_cli import in_process
    from tig.user_model import load_user_model
    path = saved_task("bert")
    ckpt = load_user_model(path, classes="negative,positive")
    assert ckpt.meta["input"] == "strings" and ckpt.maxlen == SEQUENCE and ckpt.meta["output_kind"] == "raw"
    assert ckpt.tokenizer.tokenize(TEXTS[1]) == ["[CLS]"] + list(TEXTS[1]) + ["[SEP]"]
    out = tmp_path / "vis"
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = in_process(capsys, visualize.main, "--method", "ig", "--model", path, "--classes",
                            "negative,positive", "--text", TEXTS[0], "--format", "md", "--out", str(out),
                            "--steps", "16")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stdout + result.stderr
    assert not [w for w in caught if "keras" in w.filename], [str(w.message) for w in caught]
    md = (out / "explanations.md").read_text(encoding="utf-8")
    assert md.count('<font color="#') == len(TEXTS[0]) + 2 and "[CLS]" in md and "[SEP]" in md
    assert "logit" in md and "not a probability" in md


def test_evaluate_on_a_task_saved_with_its_preprocessor(tmp_path, capsys):
    """evaluate.py on a string-input KerasHub task: its own preprocessor makes the ids, tokens are deleted
    by id with [CLS]/[SEP] never removed, and the task's logits are scored as probabilities."""
    import evaluate
    from test_cli import in_process
    hotel()     # skips (or fails in CI) without the shared data
    path = saved_task("bert")
    fixed = (0, 2, 3)      # [PAD], [CLS], [SEP]
    row = np.array([2, 5, 6, 7, 3, 0])
    np.testing.assert_array_equal(faithfulness.perturb(row, [0, 1], fixed=fixed), [2, 6, 7, 3, 0, 0])
    np.testing.assert_array_equal(faithfulness.perturb(row, [2], keep=True, fixed=fixed), [2, 6, 3, 0, 0, 0])
    result = in_process(capsys, evaluate.main, "--model", path, "--classes", "negative,positive", "--task", "hotel",
                        "--data-dir", SHARED_DATA, "-n", "8", "--steps", "8", "--baselines", "zero",
                        "--out", str(tmp_path / "ev"))
    assert result.returncode == 0, result.stderr
    import json
    results = json.loads((tmp_path / "ev" / "faithfulness.json").read_text(encoding="utf-8"))
    assert set(results["methods"]) == {"ig[zero]", "gradxinput", "saliency", "random"}
    for r in results["methods"].values():
        assert all(0.0 <= p <= 1.0 for p in r["deletion_curve"])       # probabilities, not logits
    refused = in_process(capsys, evaluate.main, "--model", path, "--classes", "negative,positive", "--task", "hotel",
                         "--data-dir", SHARED_DATA, "-n", "4", "--methods", "occlusion", "--out", str(tmp_path / "o"))
    assert refused.returncode == 1 and "on a KerasHub task evaluate.py runs ig" in refused.stderr


def test_plain_ids_to_a_task_with_its_tokenizer_hold_cls_and_sep_fixed():
    """Plain ids (no dict) given to a task whose tokenizer is known (its preprocessor is attached): the
    tokenizer's special tokens keep their embedding on the path and score exactly 0.0, as for strings."""
    hotel()
    model = load(saved_task("bert"))
    ids = np.asarray(model.preprocessor(tf.constant(TEXTS))["token_ids"])
    special = set(model.preprocessor.tokenizer.special_token_ids)
    assert {int(ids[0, 0])} <= special and len(special) > 1
    on_ids = integrated_gradients(model, ids, steps=STEPS, baseline="pad")
    on_strings = integrated_gradients(model, TEXTS, steps=STEPS, baseline="pad")
    assert np.all(on_ids.scores[np.isin(ids, list(special))] == 0.0) and np.any(on_ids.scores != 0.0)
    np.testing.assert_allclose(on_ids.scores, on_strings.scores, atol=1e-6)
    np.testing.assert_allclose(on_ids.delta, on_strings.delta, atol=1e-6)
