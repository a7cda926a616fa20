"""tig/keras_compat.py against the installed Keras and KerasHub: each function that wraps a private API,
on real layers (a functional model with an Embedding, a Sequential, a KerasHub TransformerEncoder, a
SparseAdam step), so a release that moves one of them fails here; and no other module of tig imports
keras.src or keras_hub.src."""
import ast
import os

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras import layers

import tig
from tig import keras_compat
from tig.model import SparseAdam

TIG_DIR = os.path.dirname(os.path.abspath(tig.__file__))
PRIVATE_PACKAGES = ("keras.src", "keras_hub.src")


def functional_with_embedding():
    inputs = keras.Input((None,), dtype="int32")
    x = layers.Embedding(20, 4, mask_zero=True, name="tokens")(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


IDS = np.array([[3, 5, 7, 0, 0], [1, 2, 0, 0, 0]], np.int32)


def test_keras_mask_is_read_from_and_set_on_a_tensor():
    embedding = layers.Embedding(20, 4, mask_zero=True)
    out = embedding(IDS)
    mask = keras_compat.get_keras_mask(out)
    np.testing.assert_array_equal(np.asarray(mask), IDS != 0)
    fresh = tf.identity(out)
    assert keras_compat.get_keras_mask(fresh) is None
    keras_compat.set_keras_mask(fresh, mask)
    np.testing.assert_array_equal(np.asarray(keras_compat.get_keras_mask(fresh)), IDS != 0)
    # the layers after it see the mask: masked average pooling ignores the padding columns
    pooled = layers.GlobalAveragePooling1D()(fresh)
    np.testing.assert_allclose(np.asarray(pooled)[1], np.asarray(out)[1, :2].mean(0), rtol=1e-6)


def test_call_is_replaced_on_one_layer_object_and_put_back():
    model = functional_with_embedding()
    embedding = model.get_layer("tokens")
    other = layers.Embedding(20, 4)
    other.build((None, 5))
    before = np.asarray(model(IDS))
    seen = []

    def zeros(original, ids, *args, **kwargs):
        seen.append(np.asarray(ids))
        return tf.zeros_like(original(ids, *args, **kwargs))
    own = keras_compat.replace_call(embedding, zeros)
    assert own is None
    replaced = np.asarray(model(IDS))
    assert np.abs(np.asarray(other(IDS))).sum() > 0           # another instance of the class: untouched
    np.testing.assert_array_equal(seen[0], IDS)
    # zero vectors: the dense layer gives its bias alone, the same for both rows
    np.testing.assert_allclose(replaced[0], replaced[1], rtol=1e-6)
    assert not np.allclose(replaced, before)
    keras_compat.restore_call(embedding, own)
    assert "call" not in embedding.__dict__
    np.testing.assert_array_equal(np.asarray(model(IDS)), before)


def test_replace_call_nests_and_restores_an_instance_call():
    dense = layers.Dense(2)
    x = np.ones((1, 3), np.float32)
    plain = np.asarray(dense(x))
    outer = keras_compat.replace_call(dense, lambda original, *a, **k: original(*a, **k) * 2)
    inner = keras_compat.replace_call(dense, lambda original, *a, **k: original(*a, **k) + 1)
    assert outer is None and inner is not None
    np.testing.assert_allclose(np.asarray(dense(x)), plain * 2 + 1, rtol=1e-6)
    keras_compat.restore_call(dense, inner)
    np.testing.assert_allclose(np.asarray(dense(x)), plain * 2, rtol=1e-6)
    keras_compat.restore_call(dense, outer)
    np.testing.assert_array_equal(np.asarray(dense(x)), plain)


def test_nested_layers_of_functional_sequential_and_nested_models():
    model = functional_with_embedding()
    names = [layer.name for layer in keras_compat.nested_layers(model)]
    assert "tokens" in names and "out" in names and model.name not in names
    inner = keras.Sequential([layers.Embedding(20, 4, name="inner_embedding"), layers.GlobalAveragePooling1D()],
                             name="inner")
    outer = keras.Sequential([keras.Input((5,), dtype="int32"), inner, layers.Dense(2, name="outer_dense")])
    names = [layer.name for layer in keras_compat.nested_layers(outer)]
    assert names.index("inner") < names.index("inner_embedding") < names.index("outer_dense")


def test_nested_layers_reach_the_sublayers_of_a_kerashub_layer():
    keras_hub = pytest.importorskip("keras_hub")
    inputs = keras.Input((6,), dtype="int32")
    embedded = keras_hub.layers.TokenAndPositionEmbedding(20, 6, 8, name="tpe")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling1D()(embedded)))
    found = keras_compat.nested_layers(model)
    assert any(isinstance(layer, keras.layers.Embedding) for layer in found)          # its ReversibleEmbedding
    assert any("PositionEmbedding" in type(layer).__name__ for layer in found)


def test_transformer_encoder_sublayers_and_mask_recompute_the_layer():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    layer = keras_hub.layers.TransformerEncoder(intermediate_dim=12, num_heads=2)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    padding = IDS != 0
    whole = np.asarray(layer(x, padding_mask=padding))
    parts = keras_compat.transformer_encoder_sublayers(layer)
    assert sorted(vars(parts)) == sorted(keras_compat.ENCODER_SUBLAYERS)
    assert all(isinstance(sublayer, keras.layers.Layer) for sublayer in vars(parts).values())
    mask = keras_compat.merge_padding_and_attention_mask(x, padding, None)
    np.testing.assert_array_equal(np.asarray(mask), padding[:, None, :].astype("int32"))
    assert keras_compat.merge_padding_and_attention_mask(x, None, None) is None
    # post-norm encoder (normalize_first=False), every position
    h = parts.self_attention_layer(query=x, value=x, attention_mask=mask)
    h = parts.self_attention_layer_norm(parts.self_attention_dropout(h) + x)
    out = parts.feedforward_output_dense(parts.feedforward_intermediate_dense(h))
    out = parts.feedforward_layer_norm(parts.feedforward_dropout(out) + h)
    np.testing.assert_allclose(np.asarray(out), whole, rtol=1e-5, atol=1e-6)


def test_build_from_local_batch_builds_model_and_optimizer_once():
    model = functional_with_embedding()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    labels = np.array([0, 2])
    keras_compat.build_from_local_batch(model, tf.distribute.get_strategy(), (IDS, labels))
    assert model.built and model.optimizer.built
    slots = [v.path for v in model.optimizer.variables]
    history = model.fit(IDS, labels, epochs=1, verbose=0)        # fit does not build again
    assert [v.path for v in model.optimizer.variables] == slots
    assert np.isfinite(history.history["loss"][0])


def fasttext_like(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None,), dtype="int32")
    x = layers.GlobalAveragePooling1D()(layers.Embedding(20, 4, name="tokens")(inputs))
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


DISTINCT = np.array([[3, 5, 7, 9], [1, 2, 4, 6]], np.int32)   # no row twice: lazy Adam is Adam on these rows


def train_step(model, optimizer, steps=3):
    labels = np.array([0, 2])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(labels, model(DISTINCT))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return grads


def test_sparse_adam_keeps_adams_slots_and_updates_only_used_rows():
    model, reference = fasttext_like(1), fasttext_like(1)
    sparse, adam = SparseAdam(1e-2), keras.optimizers.Adam(1e-2)
    grads = train_step(model, sparse)
    train_step(reference, adam)
    assert isinstance(grads[0], tf.IndexedSlices)        # the Embedding's gradient takes the sparse path
    # the same slots as Adam's, by name and order
    assert [v.path for v in sparse.variables] == [v.path.replace(adam.name, sparse.name) for v in adam.variables]
    assert len(sparse.momentums) == len(sparse.velocities) == len(model.trainable_variables)
    # the same numbers as Adam's: its update on the dense weights, and on the rows the batch used
    for ours, theirs in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)   # float rounding
    # embedding rows: only those the batch used moved, and only their slots are set
    table = model.get_layer("tokens").embeddings
    start = fasttext_like(1).get_layer("tokens").embeddings
    used = np.unique(DISTINCT)
    unused = np.setdiff1d(np.arange(20), used)
    np.testing.assert_array_equal(np.asarray(table)[unused], np.asarray(start)[unused])
    assert not np.allclose(np.asarray(table)[used], np.asarray(start)[used])
    momentum = np.asarray(sparse.momentums[sparse.slot(table)])
    assert np.all(momentum[unused] == 0) and np.all(np.abs(momentum[used]).sum(1) > 0)


def test_sparse_adam_dense_update_is_adams_op_for_op():
    def dense_model():
        keras.utils.set_random_seed(2)
        return keras.Sequential([keras.Input((4,)), layers.Dense(5, activation="relu", name="a"), layers.Dense(3, name="b")])
    x, y = np.random.default_rng(0).normal(size=(6, 4)).astype("float32"), np.array([0, 1, 2, 0, 1, 2])
    ours, theirs = dense_model(), dense_model()
    for model, optimizer in ((ours, SparseAdam(1e-2)), (theirs, keras.optimizers.Adam(1e-2))):
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)


MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tig.model import SparseAdam
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4, name="tokens")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=SparseAdam(1e-2), loss="sparse_categorical_crossentropy")
start = model.get_layer("tokens").get_weights()[0]
model.fit(np.array([[3, 5, 7, 9], [1, 2, 4, 6]] * 4, np.int32), np.array([0, 2] * 4), batch_size=4, epochs=2, verbose=0)
moved = np.any(model.get_layer("tokens").get_weights()[0] != start, axis=1)
print("MOVED", sorted(np.flatnonzero(moved).tolist()))
"""


def test_sparse_adam_finds_its_slots_for_each_replica_under_mirrored_strategy():
    """update_step is given each replica's copy of a weight: the slot index knows every copy."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MOVED [1, 2, 3, 4, 5, 6, 7, 9]" in run.stdout


def private_imports(path):
    """(line, module) of every import of keras.src or keras_hub.src in a Python file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found += [(node.lineno, n) for n in names if any(n == p or n.startswith(p + ".") for p in PRIVATE_PACKAGES)]
    return found


def test_only_keras_compat_imports_private_keras_modules():
    files = sorted(f for f in os.listdir(TIG_DIR) if f.endswith(".py"))
    assert "keras_compat.py" in files
    offenders = {f: private_imports(os.path.join(TIG_DIR, f)) for f in files if f != "keras_compat.py"}
    assert {f: found for f, found in offenders.items() if found} == {}
    assert private_imports(os.path.join(TIG_DIR, "keras_compat.py"))     # the check does see them
