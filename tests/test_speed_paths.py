"""Static shapes and XLA: bounded traces, and the same numbers as one None-dim graph per model.
Speed itself is measured by bench/bench_ig.py, never here."""
import numpy as np
import pytest

from tig import engine
from tig.checkpoint import load_checkpoint
from tig.embedding_split import none_dim_graphs, split_at_embedding
from tig.engine import ENGINE, Engine, bucket_length, chunks, length_groups, slots_for
from tig.saliency import gradients
from tig.attribution import class_scores
from tig.ig import integrated_gradients
from tig.model import build_model

TEXTS = ["房间很干净，服务很好，值得推荐", "前台态度很差，再也不来了", "位置不错但是早餐很差", "好",
         "早餐种类很多，味道也不错，就是价格有点贵", "差"]


def relative(ours, reference):
    return np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30)


def test_buckets_and_chunks():
    assert [bucket_length(n) for n in (1, 16, 17, 24, 25, 33, 49, 64, 65, 97, 256, 257)] == \
        [16, 16, 24, 24, 32, 48, 64, 64, 96, 128, 256, 384]
    for n in range(1, 200):
        assert bucket_length(n) >= n and bucket_length(n) <= max(16, 1.5 * n)
    for total, cap in ((1, 8), (8, 8), (9, 8), (23, 8), (100, 37), (3, 64)):
        for pad in (False, True):
            parts = list(chunks(total, cap, pad=pad))
            assert sum(size for _, size, _ in parts) == total and [s for s, _, _ in parts] == list(range(0, total, cap))
            assert all(size <= rows <= cap for _, size, rows in parts)
            if pad:         # XLA compiles every shape: two sizes per length
                assert {rows for _, _, rows in parts} <= {cap, max(1, cap // engine.LAST_CHUNK_DIVISOR)}
            else:           # graphs traced with the number of rows open: no padding
                assert all(size == rows for _, size, rows in parts)


def test_length_groups_follow_each_texts_own_length():
    split = split_at_embedding(build_model("mean", 20, 2))
    mask = np.zeros((5, 256), bool)
    for row, n in enumerate((3, 17, 256, 20, 0)):
        mask[row, :n] = True
    mask[4, 40] = True                      # a PAD gap: the last real position counts
    groups = {length: list(rows) for length, rows, _ in length_groups(split, mask, [mask], 1)}
    assert groups == {16: [0], 24: [1, 3], 48: [4], 256: [2]}
    for length, rows, (fitted,) in length_groups(split, mask, [mask], 1):
        assert fitted.shape == (len(rows), length) and fitted.sum() == mask[rows].sum()   # only PAD cut
    other = none_dim_graphs(split)
    assert [(length, list(rows)) for length, rows, _ in length_groups(other, mask, [mask], 1)] == \
        [(256, [0, 1, 2, 3, 4])]


@pytest.mark.parametrize("xla", [True, False])
def test_static_path_matches_none_dim_graphs(trained_checkpoint, xla):
    """Texts of very different lengths in one maxlen-padded batch: each runs at its own bucket
    (and the 300-column batch is wider than any bucket it needs), same numbers as one None-dim graph."""
    ckpt = load_checkpoint(trained_checkpoint)
    ids = ckpt.tokenizer.encode(TEXTS + ["房间" * 40], 300)
    reference_split = none_dim_graphs(split_at_embedding(ckpt.model))
    assert split_at_embedding(ckpt.model).padding_invariant and not reference_split.padding_invariant
    for kwargs in ({"steps": 20, "internal_batch_size": 50}, {"steps": 13}, {"steps": "auto"}):
        ours = integrated_gradients(ckpt.model, ids, xla=xla, **kwargs)
        reference = integrated_gradients(reference_split, ids, **kwargs)
        assert ours.scores.shape == ids.shape
        assert relative(ours.scores, reference.scores) <= 1e-5
        np.testing.assert_array_equal(ours.steps, reference.steps)
        np.testing.assert_allclose(ours.probs, reference.probs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours.delta, reference.delta, atol=1e-6)
        assert np.all(ours.scores[ids == 0] == 0.0)
    for times_input in (True, False):
        ours, reference = gradients(ckpt.model, ids, times_input=times_input, xla=xla), \
            gradients(reference_split, ids, times_input=times_input)
        assert relative(ours.scores, reference.scores) <= 1e-5
        np.testing.assert_allclose(ours.output, reference.output, rtol=1e-5)
    np.testing.assert_allclose(class_scores(ckpt.model, ids, xla=xla), ckpt.model.predict(ids, verbose=0),
                               rtol=1e-5, atol=1e-7)


def test_xla_rule(monkeypatch):
    """The call's xla=, else the Engine's own, else $TIG_XLA, else off: for every kind, and only
    for splits that compile."""
    split = split_at_embedding(build_model("mean", 20, 2))
    monkeypatch.delenv("TIG_XLA", raising=False)
    rule = Engine()
    assert not rule.use_xla(split) and engine.XLA_DEFAULT is False
    assert rule.use_xla(split, xla=True) and not rule.use_xla(split, xla=False)
    monkeypatch.setenv("TIG_XLA", "1")        # read when a call starts, not at import
    assert rule.use_xla(split)
    assert not rule.use_xla(split, xla=False), "the call's own choice beats the environment"
    assert not Engine(xla=False).use_xla(split), "the engine's own choice beats the environment"
    assert Engine(xla=False).use_xla(split, xla=True), "the call's own choice beats the engine's"
    monkeypatch.setenv("TIG_XLA", "0")
    assert not rule.use_xla(split) and Engine(xla=True).use_xla(split)
    monkeypatch.setenv("TIG_XLA", "maybe")    # only read when nothing else chose
    assert rule.use_xla(split, xla=True) and not Engine(xla=False).use_xla(split)
    assert not rule.use_xla(none_dim_graphs(split), xla=True)


def test_xla_default_does_not_depend_on_earlier_calls(monkeypatch):
    """Many more chunks than the old counter's 256 for one length (same kind, same shapes): the
    default still compiles nothing, and the numbers stay those of the first call."""
    from tig.ig import quadrature
    monkeypatch.delenv("TIG_XLA", raising=False)
    model = build_model("mean", 20, 2, embed_dim=4, hidden=4)
    split = split_at_embedding(model)
    ids = np.array([[3, 4, 5, 6, 7]], np.int32)
    x, context, _ = split.lookup(ids)
    nodes, weights = quadrature("gausslegendre", 150)
    ours = Engine()

    def call():
        return ours.path_gradient(split, x, np.zeros_like(x), np.asarray(context), np.array([1]), nodes, weights,
                                  rows=1)     # one chunk per node: 150 chunks a call
    first = call()
    for _ in range(2):
        np.testing.assert_array_equal(call(), first)
    counts = ours.traces_by_kind(split)
    assert counts == {("path", "static", False): 1}, counts


def traces(model):
    return ENGINE.traces_by_kind(split_at_embedding(model))


def test_traces_stay_bounded_over_many_calls(monkeypatch):
    """Many calls with varied lengths, batch sizes and steps: without XLA one trace per bucket and
    kind; with xla=True (every other IG call) one XLA shape per (bucket, chunk size, number of texts
    a chunk can touch: a power of two) for IG's path graphs and per (bucket, chunk size) for its
    forward passes; XLA only where a call asked for it; nothing new on a repeat."""
    monkeypatch.delenv("TIG_XLA", raising=False)
    model = build_model("cnn", 60, 3, embed_dim=16, hidden=16)
    cap = 32
    lengths, steps_used, call = set(), set(), 0
    for round_ in range(3):
        for length in (3, 9, 16, 17, 22, 30, 31):
            for batch in (1, 2, 5):
                ids = np.random.default_rng(length).integers(3, 60, (batch, length)).astype(np.int32)
                ids[0, max(1, length // 2):] = 0
                steps = 2 + (7 * length + batch) % 37
                call += 1
                integrated_gradients(model, ids, steps=steps, internal_batch_size=cap, xla=True if call % 2 else None)
                steps_used.add(steps)
                gradients(model, ids)
                lengths.add(bucket_length(length))
        if round_ == 1:
            first = traces(model)
    counts = traces(model)
    assert len(lengths) == 3
    assert {kind[0] for kind in counts} == {"path", "outputs", "gradient"}
    assert {kind[0] for kind in counts if kind[2]} == {"path", "outputs"}, "XLA: only in the calls that asked"
    assert {kind[0] for kind in counts if not kind[2]} == {"path", "outputs", "gradient"}
    sizes = (cap, cap // engine.LAST_CHUNK_DIVISOR)
    path_shapes = {(rows, slots_for(rows, steps)) for rows in sizes for steps in steps_used}
    assert len(path_shapes) < len(sizes) * len(steps_used) / 2
    for kind, count in counts.items():
        per_length = 1 if not kind[2] else len(path_shapes) if kind[0] == "path" else len(sizes)
        assert count <= len(lengths) * per_length, (kind, count)
    assert counts == first, "a repeat of the same shapes traced again"


@pytest.mark.parametrize("kind", ["own", "foreign"])
def test_the_engine_does_not_keep_models_alive(kind):
    """Graphs and Splits live with their model: a model no one uses any more is freed, with them."""
    import gc
    import weakref

    import keras
    if kind == "own":
        model = build_model("cnn", 30, 2, embed_dim=8, hidden=8)
    else:
        ids_in = keras.Input((None,), dtype="int32")
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(30, 8)(ids_in))
        model = keras.Model(ids_in, keras.layers.Dense(2, activation="softmax")(x))
    ids = np.array([[3, 4, 5, 6]], np.int32)
    integrated_gradients(model, ids, steps=4)
    gradients(model, ids)
    split = weakref.ref(split_at_embedding(model, ids))
    assert ENGINE.traces_by_kind(split()), "graphs were traced for this model"
    model_ref = weakref.ref(model)
    del model
    gc.collect()
    assert model_ref() is None and split() is None      # and so the engine's entry for it is gone
