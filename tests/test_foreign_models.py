"""Explaining Keras 3 models that model.py did not build: the keras-io tutorial shape trained on
real hotel reviews and reloaded from .keras, the original project's Sequential layout, a
subclassed model, a mask_zero LSTM and a small transformer. Every one is checked against
mathematics (completeness, exact zeros at padding) and against an independent per-alpha
GradientTape loop that runs the layers after the embedding by hand (no interception)."""
import functools
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import keras
from keras import layers, ops

import keras_io_example
from conftest import SHARED_DATA, skip_or_fail
from tig.errors import UserError
from tig.saliency import gradients
from tig.ig import integrated_gradients, quadrature

VOCAB, DIM, L = 60, 16, 20
STEPS = 50


def token_ids(seed=0, batch=6, length=L):
    """Post-padded ids with varied real lengths (one row without padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, (batch, length)).astype(np.int32)
    for row, n in enumerate(rng.integers(3, length, batch)):
        if row:
            ids[row, n:] = 0
    return ids


def fit_briefly(model, classes, logits=False, seed=0):
    """A few epochs on a made-up task (which half of the vocabulary dominates the text), so the
    model is confident and its path from the baseline is not flat."""
    ids = token_ids(seed + 100, batch=512)
    real = ids != 0
    low, high = ((ids < VOCAB // 2) & real).sum(1), ((ids >= VOCAB // 2) & real).sum(1)
    labels = (high > low).astype(int) if classes == 2 else np.where(high > low + 1, 2, (high >= low - 1).astype(int))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(ids, labels, epochs=4, batch_size=64, verbose=0)
    return model


# --- models, each with `rest(x, ids)`: the layers after the embedding, called by hand ----

def original_layout(seed=1):
    """The original project's layout: Sequential, Embedding without mask, softmax."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              layers.Embedding(VOCAB, DIM, name="embedding"), layers.Dropout(0.5),
                              layers.Conv1D(16, 3, activation="relu"), layers.GlobalMaxPooling1D(),
                              layers.Dense(16, activation="relu"), layers.Dense(2, activation="softmax")])
    fit_briefly(model, 2)

    def rest(x, ids):
        for layer in model.layers[1:]:
            x = layer(x, training=False)
        return x
    return model, rest


def lstm_with_mask(seed=2):
    """mask_zero=True Embedding -> LSTM -> softmax: masked steps are skipped by the LSTM."""
    keras.utils.set_random_seed(seed)
    ids_in = keras.Input((None,), dtype="int32")
    x = layers.Embedding(VOCAB, DIM, mask_zero=True, name="tokens")(ids_in)
    x = layers.LSTM(8, name="lstm")(x)
    model = fit_briefly(keras.Model(ids_in, layers.Dense(3, activation="softmax", name="out")(x)), 3)

    def rest(x, ids):
        h = model.get_layer("lstm")(x, mask=ops.not_equal(ids, 0), training=False)
        return model.get_layer("out")(h)
    return model, rest


class Subclassed(keras.Model):
    """Embedding -> Conv1D -> mean over real tokens -> Dense(3) with no activation (raw logits)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = layers.Embedding(VOCAB, DIM, name="emb")
        self.conv = layers.Conv1D(12, 3, padding="same", activation="tanh")
        self.logits = layers.Dense(3)

    def call(self, ids, training=False):
        return self.rest(self.embedding(ids), ids)

    def rest(self, x, ids):
        m = ops.expand_dims(ops.cast(ops.not_equal(ids, 0), "float32"), -1)
        h = self.conv(x)
        return self.logits(ops.sum(h * m, 1) / ops.maximum(ops.sum(m, 1), 1.0))


def subclassed(seed=3):
    keras.utils.set_random_seed(seed)
    model = Subclassed()
    model(token_ids())
    fit_briefly(model, 3, logits=True)
    return model, model.rest


class TinyTransformer(keras.Model):
    """Token + position Embedding, one MultiHeadAttention block, LayerNormalization, masked mean
    pooling, softmax: everything from keras.layers. Two Embedding layers."""

    def __init__(self, maxlen=64, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = layers.Embedding(VOCAB, DIM, name="token_embedding")
        self.position_embedding = layers.Embedding(maxlen, DIM, name="position_embedding")
        self.attention = layers.MultiHeadAttention(num_heads=2, key_dim=8)
        self.norm1, self.norm2 = layers.LayerNormalization(), layers.LayerNormalization()
        self.ffn1, self.ffn2 = layers.Dense(32, activation="relu"), layers.Dense(DIM)
        self.out = layers.Dense(2, activation="softmax")

    def call(self, ids, training=False):
        return self.rest(self.token_embedding(ids), ids)

    def rest(self, x, ids):
        x = x + self.position_embedding(ops.arange(ops.shape(ids)[1]))[None]
        mask = ops.not_equal(ids, 0)
        x = self.norm1(x + self.attention(x, x, attention_mask=mask[:, None, :]))
        x = self.norm2(x + self.ffn2(self.ffn1(x)))
        m = ops.expand_dims(ops.cast(mask, "float32"), -1)
        return self.out(ops.sum(x * m, 1) / ops.maximum(ops.sum(m, 1), 1.0))


def transformer(seed=4):
    keras.utils.set_random_seed(seed)
    model = TinyTransformer()
    model(token_ids())
    fit_briefly(model, 2)
    return model, model.rest


# each model is built and trained once per test session
original_layout, lstm_with_mask, subclassed, transformer = (functools.cache(f) for f in (
    original_layout, lstm_with_mask, subclassed, transformer))
BUILDERS = {"original_layout": original_layout, "lstm_mask_zero": lstm_with_mask, "subclassed": subclassed,
            "transformer": transformer}


# --- the independent reference ---------------------------------------------------------

def reference_ig(rest, table, ids, target, sigmoid=False, steps=STEPS):
    """One sample, one alpha at a time: x = table[ids], baseline 0 at real tokens and x at PAD,
    gradient of the target output of `rest` (the model after its embedding, called by hand).
    The per-point gradient is a tf.function only because an eager masked LSTM is very slow."""
    nodes, weights = quadrature("gausslegendre", steps)

    @tf.function
    def gradient_at(point, row_ids, target):
        with tf.GradientTape() as tape:
            tape.watch(point)
            out = rest(point, row_ids)
            out = tf.where(target == 1, out[:, 0], 1 - out[:, 0]) if sigmoid else tf.gather(out, target, axis=1)
        return tape.gradient(out, point)

    scores = np.zeros(ids.shape, np.float64)
    for row in range(len(ids)):
        x = table[ids[row]][None].astype(np.float32)
        x0 = np.where((ids[row] == 0)[None, :, None], x, 0).astype(np.float32)
        total = np.zeros_like(x, dtype=np.float64)
        for a, w in zip(nodes, weights):
            point = tf.constant((x0 + a * (x - x0)).astype(np.float32))
            total += w * gradient_at(point, tf.constant(ids[row][None]), tf.constant(int(target[row]))).numpy()
        scores[row] = ((x - x0) * total).sum(-1)[0]
    return scores


def embedding_table(model, name):
    layer = [l for l in model._flatten_layers() if l.name == name][0]
    return layer.embeddings.numpy()


def check_attribution(ig, ids, reference):
    """completeness, agreement with the reference, exact zeros at PAD."""
    gap = np.abs(ig.delta) / np.abs(ig.output - ig.baseline_output)
    assert np.median(gap) <= 0.01, gap
    scale = np.abs(reference).max()
    assert np.abs(ig.scores - reference).max() <= 1e-5 * scale + 1e-7, np.abs(ig.scores - reference).max() / scale
    assert np.all(ig.scores[ids == 0] == 0.0)
    np.testing.assert_allclose(ig.scores.sum(1), ig.output - ig.baseline_output - ig.delta, atol=1e-5)


@pytest.mark.parametrize("name", BUILDERS)
def test_foreign_model_ig_against_reference(name):
    model, rest = BUILDERS[name]()
    ids = token_ids()
    before = [w.copy() for w in model.get_weights()]
    ig = integrated_gradients(model, ids, steps=STEPS)
    emb_name = {"original_layout": "embedding", "lstm_mask_zero": "tokens", "subclassed": "emb",
                "transformer": "token_embedding"}[name]
    assert ig.layer == emb_name
    np.testing.assert_allclose(ig.probs, np.asarray(model(ids)) if name != "subclassed" else model(ids),
                               rtol=1e-5, atol=1e-6)
    reference = reference_ig(rest, embedding_table(model, emb_name), ids, ig.target)
    check_attribution(ig, ids, reference)
    grad = gradients(model, ids)
    assert np.all(grad.scores[ids == 0] == 0.0) and np.any(grad.scores != 0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # nothing is left patched on the layers
    assert all("call" not in l.__dict__ for l in model._flatten_layers())


def test_output_kinds():
    assert integrated_gradients(original_layout()[0], token_ids(), steps=4).output_kind == "softmax"
    raw = integrated_gradients(subclassed()[0], token_ids(), steps=4)
    assert raw.output_kind == "raw" and not np.allclose(raw.probs.sum(1), 1)


def test_transformer_layer_choice():
    model, _ = transformer()
    ids = token_ids()
    default = integrated_gradients(model, ids, steps=8)
    named = integrated_gradients(model, ids, steps=8, layer="token_embedding")
    by_object = integrated_gradients(model, ids, steps=8, layer=model.token_embedding)
    assert default.layer == "token_embedding"
    np.testing.assert_array_equal(default.scores, named.scores)
    np.testing.assert_array_equal(default.scores, by_object.scores)
    with pytest.raises(UserError, match="not .batch, length, dim|batch"):
        integrated_gradients(model, ids, steps=8, layer="position_embedding")


def test_ambiguous_and_missing_embedding():
    ids_in = keras.Input((None,), dtype="int32")
    a = layers.Embedding(VOCAB, 8, name="word_a")(ids_in)
    b = layers.Embedding(VOCAB, 8, name="word_b")(ids_in)
    pooled = layers.GlobalAveragePooling1D()(layers.Concatenate()([a, b]))
    two = keras.Model(ids_in, layers.Dense(2, activation="softmax")(pooled))
    with pytest.raises(UserError, match="'word_a'.*'word_b'"):
        integrated_gradients(two, token_ids(), steps=4)
    chosen = integrated_gradients(two, token_ids(), steps=16, layer="word_b")
    assert chosen.layer == "word_b" and np.all(chosen.scores[token_ids() == 0] == 0)
    with pytest.raises(UserError, match="no Embedding layer named 'nope'.*'word_a'"):
        integrated_gradients(two, token_ids(), layer="nope")

    ids_in = keras.Input((L,), dtype="int32")
    x = layers.Dense(2, activation="softmax")(layers.Lambda(lambda t: ops.cast(t, "float32"))(ids_in))
    with pytest.raises(UserError, match="no Embedding layer"):
        integrated_gradients(keras.Model(ids_in, x), token_ids())


def test_traces_per_exact_length_are_bounded():
    """Other models run at their exact length (no bucketing: their padding invariance is
    unknown): one trace per length (rows left open) for an engine's `exact_lengths` lengths (an
    Engine of this test's own, with 2), then one None-dim graph per kind, with the same numbers;
    a repeat traces nothing new."""
    from tig.embedding_split import none_dim_graphs, split_at_embedding
    from tig.engine import Engine
    model, _ = original_layout()
    split = split_at_embedding(model, token_ids())
    reference = none_dim_graphs(split)
    ours = Engine(exact_lengths=2)

    def explain(engine, split, ids, steps):
        """What integrated_gradients and gradients ask of the engine: outputs, IG's path sums, gradients."""
        x, context, _ = split.lookup(ids)
        context = np.asarray(context)
        target = engine.outputs(split, x, context).argmax(1)
        nodes, weights = quadrature("gausslegendre", steps)
        return (engine.path_gradient(split, x, np.zeros_like(x), context, target, nodes, weights),
                engine.gradient(split, x, context, target)[0])

    calls = [(seed, length, batch) for seed, length, batch in ((1, 12, 3), (2, 31, 7), (3, 8, 1), (4, 25, 2))]
    results = {}
    for _ in range(2):
        for seed, length, batch in calls:
            results[seed] = explain(ours, split, token_ids(seed, batch, length), 10 + seed)
        if not _:
            first = ours.traces_by_kind(split)
    counts = ours.traces_by_kind(split)
    assert counts == first, "a repeat of the same shapes traced again"
    assert {kind[0] for kind in counts} == {"outputs", "path", "gradient"}
    assert {kind[1] for kind in counts} == {"static", "none dims"} and not any(kind[2:] == (True,) for kind in counts)
    for kind, count in counts.items():
        assert count <= (1 if kind[1] == "none dims" else 2), (kind, count)   # exact_lengths=2
    plain = Engine()
    for seed, length, batch in calls:    # static graphs (the first two lengths) and None-dim ones give the same numbers
        ig, grad = results[seed]
        ig_reference, grad_reference = explain(plain, reference, token_ids(seed, batch, length), 10 + seed)
        assert ig.shape == ig_reference.shape == (batch, length, DIM)
        np.testing.assert_allclose(ig, ig_reference, atol=1e-6)
        np.testing.assert_allclose(grad, grad_reference, atol=1e-6)


# --- the keras-io tutorial model, trained on real reviews, saved and reloaded ----------

SEQUENCE = 96


@pytest.fixture(scope="module")
def keras_io_file(tmp_path_factory):
    if not os.path.exists(os.path.join(SHARED_DATA, "ChnSentiCorp_htl_all.csv")):
        skip_or_fail(f"no real data at {SHARED_DATA} (set $TIG_DATA_DIR)")
    from tig.dataset import load_task
    train = load_task("hotel", SHARED_DATA).train
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train.texts), 400, replace=False)
    # keras_io_example.py: the tutorial's TextVectorization(split="character") outside a nested int model,
    # Embedding -> Dropout -> Conv1D valid stride 3 x2 -> GlobalMaxPooling1D -> Dense -> Dropout -> Dense(1, sigmoid)
    model, _ = keras_io_example.train([train.texts[i] for i in pick], [int(train.labels[i]) for i in pick],
                                      epochs=2, max_tokens=3000, sequence=SEQUENCE, dim=16)
    path = str(tmp_path_factory.mktemp("keras_io") / "end_to_end.keras")
    model.save(path)
    return path


def test_keras_io_model_from_file(keras_io_file):
    from tig.dataset import load_task
    model = keras.saving.load_model(keras_io_file)
    texts = load_task("hotel", SHARED_DATA).test.texts[:6]
    texts[0] = texts[0][:30]             # short: padded up to the sequence length
    before = [w.copy() for w in model.get_weights()]
    ig = integrated_gradients(model, texts, steps=STEPS)
    assert ig.output_kind == "sigmoid" and ig.probs.shape == (6, 2)
    p = np.asarray(model(tf.constant(np.array(texts, dtype=object)[:, None])))[:, 0]
    np.testing.assert_allclose(ig.probs[:, 1], p, rtol=1e-5)
    np.testing.assert_allclose(ig.probs[:, 0], 1 - p, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ig.target, (p > 0.5).astype(int))
    ids = ig.token_ids
    assert ids.shape == (6, SEQUENCE) and np.any(ids[0] == 0)
    # tokens are what the TextVectorization produced, one per position
    vocabulary = [l for l in model._flatten_layers() if isinstance(l, layers.TextVectorization)][0].get_vocabulary()
    assert ig.tokens[0] == [vocabulary[i] for i in ids[0][ids[0] != 0]]
    # character tokens of this very text: in order, each a character of it (the layer lowercases and
    # strips ASCII punctuation) or [UNK] (the 3,000-token vocabulary lacks it)
    characters = iter(texts[0].lower())
    assert len(ig.tokens[0]) >= 10 and all(token == "[UNK]" or token in characters for token in ig.tokens[0])

    int_model = [l for l in model.layers if isinstance(l, keras.Model)][0]
    table = [l for l in int_model.layers if isinstance(l, layers.Embedding)][0].embeddings.numpy()

    def rest(x, ids):
        for layer in int_model.layers[2:]:
            x = layer(x, training=False)
        return x
    reference = reference_ig(rest, table, ids, ig.target, sigmoid=True)
    check_attribution(ig, ids, reference)
    # the nested int model explained on ids directly gives the same scores
    on_ids = integrated_gradients(int_model, ids, steps=STEPS)
    np.testing.assert_allclose(on_ids.scores, ig.scores, atol=1e-6)
    # class 0 = 1 - p: exactly the mirror image
    mirror = integrated_gradients(model, texts, target=1 - ig.target, steps=STEPS)
    np.testing.assert_allclose(mirror.scores, -ig.scores, atol=1e-6)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_user_model_loader(keras_io_file, tmp_path):
    from tig.user_model import load_user_model
    texts = ["房间很干净，服务也好", "太差了，不会再来"]
    ckpt = load_user_model(keras_io_file, classes="negative,positive")
    assert ckpt.classes == ["negative", "positive"] and ckpt.maxlen == SEQUENCE
    assert ckpt.meta["input"] == "strings" and ckpt.meta["output_kind"] == "sigmoid"
    inputs = ckpt.tokenizer.encode(texts, ckpt.maxlen)
    assert ckpt.model.predict(inputs, verbose=0).shape == (2, 1)
    a, b = integrated_gradients(ckpt.model, inputs, steps=8), integrated_gradients(ckpt.model, texts, steps=8)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.tokens[0] == ckpt.tokenizer.tokenize(texts[0]) == list("房间很干净，服务也好")[:len(a.tokens[0])]

    # the nested int model with a vocab.txt written from the TextVectorization vocabulary
    model = keras.saving.load_model(keras_io_file)
    int_model = [l for l in model.layers if isinstance(l, keras.Model)][0]
    int_path, vocab_path = str(tmp_path / "int.keras"), tmp_path / "vocab.txt"
    int_model.save(int_path)
    vocab_path.write_text("\n".join(ckpt.tokenizer.vocab) + "\n", encoding="utf-8")
    ints = load_user_model(int_path, vocab=str(vocab_path), maxlen=SEQUENCE)
    assert ints.meta["input"] == "ids" and ints.tokenizer.level == "char" and ints.classes == ["0", "1"]
    ids = ints.tokenizer.encode(texts, ints.maxlen)
    np.testing.assert_array_equal(ids, a.token_ids)
    np.testing.assert_allclose(integrated_gradients(ints.model, ids, steps=8).scores, a.scores, atol=1e-6)

    with pytest.raises(UserError, match="--vocab"):
        load_user_model(int_path)
    with pytest.raises(UserError, match="3 class names given but the model has 2 classes"):
        load_user_model(keras_io_file, classes="a,b,c")
    with pytest.raises(UserError, match="not found"):
        load_user_model(str(tmp_path / "missing.keras"))
    (tmp_path / "big.txt").write_text("\n".join(f"t{i}" for i in range(5000)), encoding="utf-8")
    with pytest.raises(UserError, match="do not belong together"):
        load_user_model(int_path, vocab=str(tmp_path / "big.txt"))


def test_command_lines_explain_a_users_model(keras_io_file, tmp_path, capsys):
    # main() of each script in this process: test_cli, test_visualize and test_evaluate run the real commands
    import evaluate
    import visualize
    from test_cli import assert_clean_failure, in_process
    out = tmp_path / "vis"
    result = in_process(capsys, visualize.main, "--method", "both", "--model", keras_io_file, "--classes",
                        "negative,positive", "--text", "房间很干净，服务也好", "--text", "太差了<b>",
                        "--format", "html,md,png,ansi", "--out", str(out))
    assert result.returncode == 0, result.stderr
    md = (out / "explanations.md").read_text(encoding="utf-8")
    # the units are the tokens the model saw: its TextVectorization drops "<" and ">"
    assert md.count('<font color="#') >= 2 * len("房间很干净，服务也好") and "<b>" not in md
    # the command line's default is --steps auto: 16, 32, ... 512 Gauss-Legendre nodes until complete within 1%
    assert re.search(r"integrated gradients, (16|32|64|128|256|512) steps", md), md
    assert "gradient x input" in md and "predicted " in md
    assert (out / "explanations.png").stat().st_size > 5000

    # the nested int model with a vocab.txt: evaluate.py on the hotel test split
    model = keras.saving.load_model(keras_io_file)
    int_model = [l for l in model.layers if isinstance(l, keras.Model)][0]
    vectorizer = [l for l in model._flatten_layers() if isinstance(l, layers.TextVectorization)][0]
    int_path, vocab_path = str(tmp_path / "int.keras"), tmp_path / "vocab.txt"
    int_model.save(int_path)
    vocab_path.write_text("\n".join(vectorizer.get_vocabulary()) + "\n", encoding="utf-8")
    result = in_process(capsys, evaluate.main, "--model", int_path, "--vocab", str(vocab_path), "--maxlen",
                        str(SEQUENCE), "--task", "hotel", "--data-dir", SHARED_DATA, "-n", "8", "--steps", "8",
                        "--methods", "ig,random", "--baselines", "zero", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    assert "| ig[zero] |" in result.stdout and "| random |" in result.stdout

    assert_clean_failure(in_process(capsys, evaluate.main, "--model", keras_io_file, "--task", "hotel"),
                         "takes strings")
    assert_clean_failure(in_process(capsys, visualize.main, "--model", int_path, "--text", "好"), "--vocab")
    assert_clean_failure(in_process(capsys, visualize.main, "--vocab", str(vocab_path), "--text", "好"),
                         "--vocab goes with --model")
