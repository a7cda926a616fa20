"""Static shapes and XLA for model.py's models: bounded traces, and the same numbers as the
None-dim (exact-shape) graphs. Speed itself is measured by bench.py, never here."""
import numpy as np
import pytest

import gradients as gradients_module
from gradients import bucket_length, chunks, exact_shapes, gradients
from integrated_gradients import integrated_gradients
from model import build_model, load_checkpoint, split_at_embedding

TEXTS = ["房间很干净，服务很好，值得推荐", "前台态度很差，再也不来了", "位置不错但是早餐很差", "好",
         "早餐种类很多，味道也不错，就是价格有点贵", "差"]


def relative(ours, reference):
    return np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30)


def test_buckets_and_chunks():
    assert [bucket_length(n) for n in (1, 16, 17, 24, 25, 33, 49, 64, 65, 97, 256, 257)] == \
        [16, 16, 24, 24, 32, 48, 64, 64, 96, 128, 256, 384]
    for n in range(1, 200):
        assert bucket_length(n) >= n and bucket_length(n) <= max(16, 1.5 * n)
    for total, cap in ((1, 8), (8, 8), (9, 8), (23, 8), (100, 37)):
        parts = list(chunks(total, cap))
        assert sum(size for _, size, _ in parts) == total and [s for s, _, _ in parts] == list(range(0, total, cap))
        assert all(size <= rows <= cap for _, size, rows in parts)
        assert {rows for _, _, rows in parts} <= {cap} | {1 << k for k in range(cap.bit_length())}


@pytest.mark.parametrize("xla", [True, False])
def test_static_path_matches_exact_shapes(trained_checkpoint, xla):
    ckpt = load_checkpoint(trained_checkpoint)
    ids = ckpt.tokenizer.encode(TEXTS, 37)          # padded up to the 48 bucket inside
    exact = exact_shapes(split_at_embedding(ckpt.model))
    assert split_at_embedding(ckpt.model).own and not exact.own
    for kwargs in ({"steps": 20, "batch_size": 50}, {"steps": 13}, {"steps": "auto"}):
        ours = integrated_gradients(ckpt.model, ids, xla=xla, **kwargs)
        reference = integrated_gradients(exact, ids, **kwargs)
        assert relative(ours.scores, reference.scores) <= 1e-5
        np.testing.assert_array_equal(ours.steps, reference.steps)
        np.testing.assert_allclose(ours.probs, reference.probs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours.delta, reference.delta, atol=1e-6)
        assert np.all(ours.scores[ids == 0] == 0.0)
    for times_input in (True, False):
        ours, reference = gradients(ckpt.model, ids, times_input=times_input, xla=xla), \
            gradients(exact, ids, times_input=times_input)
        assert relative(ours.scores, reference.scores) <= 1e-5
        np.testing.assert_allclose(ours.output, reference.output, rtol=1e-5)


def test_env_switch_turns_xla_off(monkeypatch):
    split = split_at_embedding(build_model("mean", 20, 2))
    assert gradients_module.use_xla(split, xla=False) is False
    monkeypatch.setattr(gradients_module, "XLA", False)
    assert gradients_module.use_xla(split) is False
    monkeypatch.setattr(gradients_module, "XLA", True)
    assert gradients_module.use_xla(split) is True and not gradients_module.use_xla(exact_shapes(split))


def test_traces_stay_bounded_over_many_calls():
    model = build_model("cnn", 60, 3, embed_dim=16, hidden=16)
    cap = 32
    calls, lengths = 0, set()
    for round_ in range(2):
        for length in (3, 9, 16, 17, 22, 30, 31):
            for batch in (1, 2, 5):
                ids = np.random.default_rng(length).integers(3, 60, (batch, length)).astype(np.int32)
                ids[0, max(1, length // 2):] = 0
                integrated_gradients(model, ids, steps=2 + (7 * length + batch) % 37, batch_size=cap)
                gradients(model, ids)
                calls += 1
                lengths.add(bucket_length(length))
        if round_ == 0:
            first = {kind: fn.experimental_get_tracing_count()
                              for (key, kind), fn in gradients_module._TRACED.items() if key is model.get_layer("head")}
    counts = {kind: fn.experimental_get_tracing_count()
              for (key, kind), fn in gradients_module._TRACED.items() if key is model.get_layer("head")}
    # path: one trace per (bucket, chunk size); chunk sizes are cap or a power of two below it
    sizes = len({cap} | {1 << k for k in range(cap.bit_length())})
    assert sum(counts.values()) > 0 and len(lengths) == 3
    for kind, count in counts.items():
        assert count <= len(lengths) * sizes, (kind, count)
    assert counts == first, "a second round of the same shapes traced again"
    assert sum(counts.values()) < 3 * calls
