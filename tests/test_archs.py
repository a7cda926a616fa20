"""The fasttext and transformer architectures, --init-from, and the real-fastText comparison."""
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import train_tiny
from tig.saliency import gradients
from tig.ig import integrated_gradients, quadrature
from tig.model import HashedNgramEmbedding, build_model
from tig.checkpoint import CheckpointError, init_from_checkpoint, load_checkpoint
from tig.tokenizer import Tokenizer

NEW_ARCHS = ("fasttext", "transformer")
TEXTS = ["房间很干净，服务很好", "前台态度很差", "好"]


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_trains_reloads_and_explains(tiny_checkpoints, arch):
    ckpt = load_checkpoint(tiny_checkpoints[arch])
    assert ckpt.meta["arch"] == arch
    assert ckpt.metrics["test_accuracy"] >= 0.8, "the fixture task is easy (majority 0.5); a broken model would not learn it"
    ids = ckpt.tokenizer.encode(TEXTS, 24)
    again = load_checkpoint(tiny_checkpoints[arch])
    np.testing.assert_array_equal(ckpt.model.predict(ids, verbose=0), again.model.predict(ids, verbose=0))
    # and explains the reloaded model: complete, zero on padding, the same as on the first load
    ig = integrated_gradients(again.model, ids, steps="auto")
    gap = np.abs(ig.scores.sum(1) - (ig.output - ig.baseline_output))   # completeness, recomputed from scores
    assert np.all(gap <= 0.01 * np.abs(ig.output - ig.baseline_output) + 1e-6) and np.all(ig.scores[ids == 0] == 0.0) and np.any(ig.scores != 0)
    np.testing.assert_allclose(integrated_gradients(ckpt.model, ids, steps="auto").scores, ig.scores, atol=1e-6)


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_extra_pad_columns_change_nothing(arch):
    model = build_model(arch, vocab_size=40, num_classes=3, embed_dim=16, hidden=16)
    ids = np.array([[5, 9, 17, 3, 30, 0], [4, 1, 2, 7, 8, 11], [6, 0, 0, 0, 0, 0]], np.int32)
    for extra in (1, 2, 3, 40):
        longer = np.concatenate([ids, np.zeros((3, extra), np.int32)], axis=1)
        np.testing.assert_allclose(model(ids), model(longer), atol=1e-6)
    ig = integrated_gradients(model, ids, steps=16)
    ig_long = integrated_gradients(model, np.concatenate([ids, np.zeros((3, 9), np.int32)], axis=1), steps=16)
    np.testing.assert_allclose(ig.scores, ig_long.scores[:, :6], atol=1e-6)


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_exact_zeros_at_pad(tiny_checkpoints, arch):
    ckpt = load_checkpoint(tiny_checkpoints[arch])
    ids = ckpt.tokenizer.encode(TEXTS, 30)
    embeddings, _ = ckpt.model.get_layer("embedder")(ids)
    assert np.all(np.asarray(embeddings)[ids == 0] == 0)
    for attribution in (integrated_gradients(ckpt.model, ids, steps=8), gradients(ckpt.model, ids),
                        gradients(ckpt.model, ids, times_input=False)):
        assert np.all(attribution.scores[ids == 0] == 0.0)
        assert np.all(attribution.scores[ids != 0] != 0.0)


def test_fasttext_character_scores_are_complete(tiny_checkpoints):
    ckpt = load_checkpoint(tiny_checkpoints["fasttext"])
    ids = ckpt.tokenizer.encode(TEXTS, 24)
    for baseline in ("zero", "unk"):
        ig = integrated_gradients(ckpt.model, ids, steps=256, baseline=baseline)
        total = ig.output - ig.baseline_output
        np.testing.assert_allclose(ig.scores.sum(1), total, rtol=1e-2, atol=1e-5)   # the 1% of evaluate.py


def test_fasttext_fixture_is_the_default_recipe(tiny_checkpoints):
    """The tiny fasttext checkpoint that the tests above train, reload and explain (completeness
    within 1%, exact zeros at PAD) is built by train.py's fasttext defaults: no hidden layer,
    no dropout, a cosine schedule, the n-gram table size of ARCH_DEFAULTS."""
    import train
    defaults = train.ARCH_DEFAULTS["fasttext"]
    ckpt = load_checkpoint(tiny_checkpoints["fasttext"])
    assert {k: ckpt.meta[k] for k in ("hidden", "dropout", "schedule")} == \
        {k: defaults[k] for k in ("hidden", "dropout", "schedule")}
    head = ckpt.model.get_layer("head")
    assert [l.name for l in head.layers if l.weights] == ["probs"], "mean -> softmax, nothing between"
    tables = [l for l in ckpt.model.get_layer("embedder").layers if isinstance(l, HashedNgramEmbedding)]
    assert [l.buckets for l in tables] == [defaults["ngram_buckets"]] * 2


def test_arch_defaults_leave_the_other_architectures_alone():
    from tig import model
    import train
    cnn = train.parse_args(["--task", "hotel"])
    assert (cnn.hidden, cnn.dropout, cnn.lr, cnn.batch_size, cnn.epochs, cnn.schedule, cnn.mask_rate) == \
        (model.HIDDEN, model.DROPOUT, train.LEARNING_RATE, train.BATCH_SIZE, train.EPOCHS, "constant", train.MASK_RATE)
    fast = train.parse_args(["--task", "thucnews", "--arch", "fasttext"])
    assert {k: getattr(fast, k) for k in train.ARCH_DEFAULTS["fasttext"]} == train.ARCH_DEFAULTS["fasttext"]
    assert train.parse_args(["--task", "thucnews", "--arch", "fasttext", "--lr", "0.25"]).lr == 0.25, "flags win"


def ngram_rows(layer, ids):
    """The hashed n-gram rows of one text, recomputed here in NumPy: {start j: row}."""
    table = np.asarray(layer.table)
    rows = {}
    for j in range(len(ids) - layer.order + 1):
        gram = ids[j:j + layer.order]
        if np.all(gram >= 3):
            code = layer.order
            for token in gram:
                code = (code * 1_000_003 + int(token)) % 2_147_483_647
            rows[j] = table[code * layer.mix % 2_147_483_647 % layer.buckets]
    return rows


@pytest.mark.parametrize("hidden", [8, 0])   # 0: the linear head of train.py's fasttext defaults
def test_fasttext_shares_each_ngram_equally_among_its_characters(hidden):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    model = build_model("fasttext", vocab_size=30, num_classes=3, embed_dim=6, hidden=hidden, ngram_buckets=50)
    embedder, head = model.get_layer("embedder"), model.get_layer("head")
    for layer in embedder.layers:   # bigger n-gram rows than the default init: their shares matter
        if isinstance(layer, HashedNgramEmbedding):
            layer.table.assign(np.random.default_rng(layer.order).normal(size=layer.table.shape).astype("float32"))
    ids = np.array([[7, 12, 1, 9, 25, 4, 0, 0]], np.int32)     # UNK (1) starts and breaks no n-gram
    real = int(np.sum(ids != 0))
    steps = 32
    ig = integrated_gradients(model, ids, steps=steps, baseline="zero")

    # reference: per-alpha GradientTape loop; the head sees only the mean, so every real
    # position has the same gradient g(alpha), and IG of any part v of u_i is v . G
    u, mask = embedder(ids)
    target = int(ig.target[0])
    nodes, weights = quadrature("gausslegendre", steps)
    G = np.zeros(u.shape[-1])
    for a, w in zip(nodes, weights):
        x = tf.constant(a * np.asarray(u))
        with tf.GradientTape() as tape:
            tape.watch(x)
            p = head([x, mask])[0, target]
        g = tape.gradient(p, x).numpy()[0]
        np.testing.assert_allclose(g[:real], np.broadcast_to(g[0], g[:real].shape), rtol=1e-5, atol=1e-9)
        G += w * g[0]

    chars = np.asarray(embedder.get_layer("embedding").embeddings)
    expected = np.array([chars[t] @ G for t in ids[0][:real]])
    for layer in embedder.layers:
        if isinstance(layer, HashedNgramEmbedding):
            for j, row in ngram_rows(layer, ids[0][:real]).items():
                expected[j:j + layer.order] += (row @ G) / layer.order   # one n-gram, split equally
    assert ngram_rows(embedder.get_layer("ngram2_embedding"), ids[0][:real]).keys() == {0, 3, 4}
    np.testing.assert_allclose(ig.scores[0, :real], expected, rtol=1e-4, atol=1e-7)
    assert np.all(ig.scores[0, real:] == 0.0)
    np.testing.assert_allclose(ig.scores.sum(), ig.output - ig.baseline_output, rtol=1e-4, atol=1e-7)


def test_ngram_hash_fills_the_buckets_and_old_checkpoints_keep_theirs():
    """The 90,000 bigrams of 300 characters fill 120,000 rows nearly as a random hash would
    (63,316 expected); the unmixed polynomial (mix=1) put them into 3,573, as it put THUCNews's
    bigrams into a fifth of the rows. A layer config saved before the mixing (no "mix") still
    hashes as it did. ngram_rows above checks the layer against this formula."""
    layer = build_model("fasttext", vocab_size=303, num_classes=2, embed_dim=1,
                        ngram_buckets=120_000).get_layer("embedder").get_layer("ngram2_embedding")

    def rows_used(mix):
        return len({(((2 * 1_000_003 + a) * 1_000_003 + b) % 2_147_483_647) * mix % 2_147_483_647 % layer.buckets
                    for a in range(3, 303) for b in range(3, 303)})

    assert rows_used(layer.mix) > 0.85 * 63_316 > 10 * rows_used(1)
    config = {k: v for k, v in layer.get_config().items() if k != "mix"}
    assert HashedNgramEmbedding.from_config(config).mix == 1


# --- --init-from ---------------------------------------------------------------------

def test_init_from_maps_shared_characters(tiny_checkpoints, data_dir, tmp_path):
    source = load_checkpoint(tiny_checkpoints["cnn"])
    tokenizer = Tokenizer.fit(["很好的一天", "开心开心"], min_freq=1)
    model = build_model("cnn", len(tokenizer), 4)
    summary = init_from_checkpoint(model, tokenizer, tiny_checkpoints["cnn"], ["a", "b", "c", "d"])
    table = np.asarray(model.get_layer("embedder").get_layer("embedding").embeddings)
    source_table = np.asarray(source.model.get_layer("embedder").get_layer("embedding").embeddings)
    shared = "很"
    assert shared in source.tokenizer.index
    np.testing.assert_array_equal(table[tokenizer.index[shared]], source_table[source.tokenizer.index[shared]])
    assert "开" not in source.tokenizer.index, "a character the source never saw keeps its fresh row"
    assert not np.array_equal(table[tokenizer.index["开"]], source_table[1])
    assert "conv" in summary["copied"] and "probs" in summary["fresh"]
    np.testing.assert_array_equal(model.get_layer("head").get_layer("conv").get_weights()[0],
                                  source.model.get_layer("head").get_layer("conv").get_weights()[0])

    out, _ = train_tiny(str(tmp_path / "moods"), data_dir, "cnn", task="moods", epochs=1,
                        extra=("--init-from", tiny_checkpoints["cnn"]))
    moods = load_checkpoint(out)
    assert moods.meta["init_from"] == tiny_checkpoints["cnn"] and len(moods.classes) == 4


def test_init_from_refuses_an_incompatible_checkpoint(tiny_checkpoints, data_dir, capsys):
    tokenizer = load_checkpoint(tiny_checkpoints["cnn"]).tokenizer
    model = build_model("transformer", len(tokenizer), 2)
    with pytest.raises(CheckpointError, match="architecture 'cnn' does not match") as error:
        init_from_checkpoint(model, tokenizer, tiny_checkpoints["cnn"], ["negative", "positive"])
    assert "\n" not in str(error.value)
    import train
    from test_cli import in_process
    result = in_process(capsys, train.main, "--task", "hotel", "--data-dir", data_dir, "--arch", "mean",
                        "--init-from", tiny_checkpoints["cnn"], "--epochs", "1", "--out", "/nonexistent/x")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot initialise from"), result.stderr


# --- real fastText -------------------------------------------------------------------

def test_comparison_without_fasttext_is_one_clear_line(monkeypatch):
    import compare_fasttext
    from tig.errors import UserError
    monkeypatch.setitem(sys.modules, "fasttext", None)    # import fasttext now raises ImportError
    with pytest.raises(UserError, match="pip install fasttext-wheel"):
        compare_fasttext.main(["--task", "hotel"])


def test_comparison_trains_both_on_the_same_split(data_dir, tmp_path):
    pytest.importorskip("fasttext", reason="optional: pip install fasttext-wheel")
    import compare_fasttext
    result = compare_fasttext.main(["--task", "hotel", "--data-dir", data_dir, "--out", str(tmp_path / "ours"),
                                    "--train-args", "--arch fasttext --epochs 2 --maxlen 24 --min-freq 1 "
                                                    "--batch-size 16 --verbose 0"])
    assert result["fasttext"]["test_accuracy"] >= 0.8, "real fastText learns the easy fixture task"
    assert result["fasttext"]["fit_seconds"] > 0 and result["ours"]["train_seconds"] > 0
    ours = load_checkpoint(str(tmp_path / "ours"))
    assert ours.meta["arch"] == "fasttext" and result["ours"]["test_accuracy"] == ours.metrics["test_accuracy"]
