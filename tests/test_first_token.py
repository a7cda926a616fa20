"""The first-token path (tig/first_token.py): the last encoder layer of a KerasHub classifier computed
for the one position its head reads gives that position's numbers as the whole layer does, on real
KerasHub layers (both normalize_first settings, partial padding masks), and integrated gradients
through it equals integrated gradients through the whole layer; models it does not know run as they
are. The reference the split is checked against (model_io.OwnForward) gives the model's own outputs
whether it runs eagerly or traced."""
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
import keras  # noqa: E402

from tig.ig import integrated_gradients  # noqa: E402
from tig import embedding_split  # noqa: E402
from tig.first_token import first_position_call, last_layer_reading_first  # noqa: E402
from tig.model_io import HubInputs, OwnForward, prepare_inputs  # noqa: E402

TEXTS = ["房间很干净，服务也很周到", "太差了，不会再来", "位置不错，早餐一般", "很好很好很好，下次还来住"]


def padding_mask(batch, length, seed=0):
    """Rows of different real lengths: True up to each length, then False."""
    lengths = np.random.default_rng(seed).integers(2, length + 1, batch)
    lengths[0] = length
    return np.arange(length)[None, :] < lengths[:, None]


@pytest.mark.parametrize("normalize_first", [False, True])
def test_first_position_equals_the_whole_layer_at_position_zero(normalize_first):
    keras.utils.set_random_seed(0)
    layer = keras_hub.layers.TransformerEncoder(intermediate_dim=24, num_heads=2, normalize_first=normalize_first)
    x = np.random.default_rng(1).normal(size=(5, 9, 16)).astype("float32")
    mask = padding_mask(5, 9)
    whole = np.asarray(layer(x, padding_mask=mask))
    first = np.asarray(first_position_call(layer.call, x, padding_mask=mask))
    assert first.shape == (5, 1, 16)
    np.testing.assert_allclose(first[:, 0], whole[:, 0], rtol=1e-5, atol=1e-6)


def task(family, seed=0):
    from tig import hub
    return hub.build(hub.vocabulary(TEXTS), family=family, sequence=20, dim=16,
                                   layers=2, seed=seed)


@pytest.mark.parametrize("family", ["bert", "distil_bert"])
def test_integrated_gradients_through_the_first_token_path_equals_the_whole_layer(family, monkeypatch):
    model = task(family)
    assert last_layer_reading_first(model) is model.backbone.transformer_layers[-1]
    calls = []
    monkeypatch.setattr(embedding_split, "first_position_call",
                        lambda *a, **k: calls.append(1) or first_position_call(*a, **k))
    fast = integrated_gradients(model, TEXTS, steps=16, rule="gausslegendre")
    assert calls, "the head did not take the first-token path"
    hub = HubInputs.of(model)
    whole = embedding_split.build_intercepted(model, None, prepare_inputs(model, TEXTS), hub, first_token=False)
    reference = integrated_gradients(whole, TEXTS, steps=16, rule="gausslegendre")
    np.testing.assert_array_equal(fast.token_ids, reference.token_ids)
    scale = np.abs(reference.scores).max()
    np.testing.assert_allclose(fast.scores, reference.scores, atol=1e-5 * scale)
    np.testing.assert_allclose(fast.output, reference.output, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(fast.delta) <= 1e-3 * np.abs(fast.output - fast.baseline_output) + 1e-5)


def test_models_it_does_not_know_run_as_they_are():
    ids = keras.Input((None,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(50, 20, 8)(ids)
    x = keras_hub.layers.TransformerEncoder(16, 2)(x)
    plain = keras.Model(ids, keras.layers.Dense(2)(x[:, 0]))
    assert last_layer_reading_first(plain) is None        # not a KerasHub task: the head may read anything

    class Custom(keras_hub.layers.TransformerEncoder):
        pass
    model = task("bert")
    model.backbone.transformer_layers[-1].__class__ = Custom   # a subclass may compute something else
    assert last_layer_reading_first(model) is None


def test_the_reference_is_the_models_own_output_eager_or_traced():
    model = task("bert", seed=3)
    features = model.preprocessor(TEXTS)
    expected = np.asarray(model(features, training=False))
    forward = OwnForward(model)
    outputs = [np.asarray(forward(features)) for _ in range(OwnForward.EAGER_CALLS + 2)]
    assert forward.graph is not None, "never traced after its eager calls"
    for out in outputs:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
