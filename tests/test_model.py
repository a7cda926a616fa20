"""Models: padding invariance, the embedding split, checkpoints that reload exactly."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tig.embedding_split import split_at_embedding
from tig.model import ARCHS, build_model
from tig.checkpoint import CheckpointError, current_version, load_checkpoint, save_checkpoint
from tig.tokenizer import Tokenizer

TEXTS = ["房间很干净，服务很好", "前台态度很差", "好"]


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_never_changes_probabilities(tiny_checkpoints, arch):
    ckpt = load_checkpoint(tiny_checkpoints[arch])
    short = ckpt.model.predict(ckpt.tokenizer.encode(TEXTS, 12), verbose=0)
    long = ckpt.model.predict(ckpt.tokenizer.encode(TEXTS, 80), verbose=0)
    np.testing.assert_allclose(short, long, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_untrained_models_are_padding_invariant_too(arch):
    # random weights make the PAD embedding large: any leak would show
    model = build_model(arch, vocab_size=50, num_classes=3)
    ids = np.array([[5, 9, 17, 3, 0, 0]], dtype=np.int32)
    longer = np.concatenate([ids, np.zeros((1, 30), np.int32)], axis=1)
    np.testing.assert_allclose(model(ids), model(longer), atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_split_at_embedding_reproduces_model(tiny_checkpoints, arch):
    ckpt = load_checkpoint(tiny_checkpoints[arch])
    ids = ckpt.tokenizer.encode(TEXTS, 20)
    split = split_at_embedding(ckpt.model)
    embeddings, mask, token_ids = split.lookup(ids)
    assert embeddings.shape == (3, 20, ckpt.meta["embed_dim"]) and embeddings.dtype == "float32"
    assert mask.dtype == bool and np.array_equal(np.asarray(mask), ids != 0) and np.array_equal(token_ids, ids)
    assert np.all(np.asarray(embeddings)[ids == 0] == 0)
    np.testing.assert_allclose(split.head(tf.constant(embeddings), mask), ckpt.model(ids), atol=1e-6)
    assert split_at_embedding(ckpt.model) is split, "one Split per model, kept with it"


def test_checkpoint_reloads_with_identical_predictions(tiny_checkpoints):
    path = tiny_checkpoints["cnn"]
    ckpt = load_checkpoint(path)
    assert ckpt.classes == ["negative", "positive"] and ckpt.maxlen == 24
    meta = json.load(open(os.path.join(current_version(path), "meta.json"), encoding="utf-8"))
    assert meta["arch"] == "cnn" and len(meta["data_sha256"]) == 64
    metrics = ckpt.metrics
    assert {"test_accuracy", "test_macro_f1", "epochs_run", "train_seconds"} <= set(metrics)
    assert metrics["test_accuracy"] >= 0.9, "the fixture task is easy; a broken pipeline would not learn it"
    ids = ckpt.tokenizer.encode(TEXTS, ckpt.maxlen)
    again = load_checkpoint(path)
    np.testing.assert_array_equal(ckpt.model.predict(ids, verbose=0), again.model.predict(ids, verbose=0))


def test_tokenizer_that_does_not_match_is_refused(tiny_checkpoints, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoints["cnn"], bad)
    files = current_version(str(bad))
    Tokenizer.fit(["完全不同的词表"], min_freq=1).save(os.path.join(files, "tokenizer.json"))
    with pytest.raises(CheckpointError, match="not the vocabulary the model was trained with"):
        load_checkpoint(str(bad))
    meta = json.load(open(os.path.join(files, "meta.json"), encoding="utf-8"))
    del meta["tokenizer_sha256"]          # without a fingerprint nothing can vouch for the tokenizer: refused
    json.dump(meta, open(os.path.join(files, "meta.json"), "w", encoding="utf-8"))
    with pytest.raises(CheckpointError, match="has no tokenizer_sha256"):
        load_checkpoint(str(bad))


def test_missing_or_incomplete_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "half")
    with pytest.raises(CheckpointError, match="model.keras is missing"):
        load_checkpoint(str(tmp_path / "half"))


def test_crash_during_save_keeps_previous_checkpoint(tiny_checkpoints, tmp_path, monkeypatch):
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    target = str(tmp_path / "ckpt")
    save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"test_accuracy": 0.5})

    def crash(self, path):
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(Tokenizer, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"test_accuracy": 0.9})
    assert load_checkpoint(target).metrics == {"test_accuracy": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["ckpt"], "no temporary directory left behind"


def test_checkpoints_hold_no_optimizer_state_and_old_ones_still_load(tmp_path):
    """Adam keeps two slots per weight: saved with the model they tripled a fasttext checkpoint (1.2 GB).
    Explaining and --init-from need the weights only; a checkpoint saved with its optimizer still loads."""
    import io
    import zipfile
    import h5py
    from tig.model import make_optimizer
    from tig.checkpoint import MODEL_FILE
    tokenizer = Tokenizer.fit(TEXTS, min_freq=1)
    ids = tokenizer.encode(TEXTS, 12)
    model = build_model("mean", len(tokenizer), 2)
    model.compile(optimizer=make_optimizer("mean", 1e-2), loss="sparse_categorical_crossentropy")
    model.train_on_batch(ids, np.array([1, 0, 1]))
    meta = {"task": "hotel", "classes": ["negative", "positive"], "maxlen": 12, "arch": "mean"}

    def weight_groups(path):
        with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
            return set(h5.keys())

    new = save_checkpoint(str(tmp_path / "new"), model, tokenizer, meta)
    assert "optimizer" not in weight_groups(os.path.join(current_version(new), MODEL_FILE))
    np.testing.assert_array_equal(load_checkpoint(new).model.predict(ids, verbose=0), model.predict(ids, verbose=0))
    assert model.optimizer is not None and model.optimizer.iterations.numpy() == 1   # the trained model is untouched

    old = tmp_path / "old"          # the earlier format: model.save of the compiled model, flat layout
    old.mkdir()
    model.save(str(old / MODEL_FILE))
    assert "optimizer" in weight_groups(old / MODEL_FILE)
    tokenizer.save(str(old / "tokenizer.json"))
    with open(old / "meta.json", "w", encoding="utf-8") as f:
        json.dump({**meta, "tokenizer_sha256": tokenizer.fingerprint()}, f)
    np.testing.assert_array_equal(load_checkpoint(str(old)).model.predict(ids, verbose=0),
                                  model.predict(ids, verbose=0))
