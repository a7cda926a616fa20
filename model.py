"""Classifier architectures, the embedding split that the explainers use, and checkpoints.

Every model is built from two named sub-models, so any architecture can be explained:

    embedder: token_ids [B, L] int32 -> (embeddings [B, L, D] float32, mask [B, L] bool)
    head:     (embeddings, mask)     -> class probabilities [B, C]
    model(token_ids) == head(*embedder(token_ids))

Padding never changes a prediction: the embedder and the head both zero the embeddings
of PAD positions (Keras 3's Conv1D drops masks, and the original let PAD leak into the
convolution at the sentence edge), convolutions use "same" zero padding, recurrent
layers receive the mask, and pooling runs over real tokens only.

Architectures (`--arch`): cnn (the original: Embedding 128 -> Dropout -> Conv1D 128x3
relu -> masked global max pool -> Dense 128 relu -> softmax), textcnn (kernels 2,3,4),
bilstm (BiLSTM 64+64 -> masked max pool), mean (fastText-like masked mean of embeddings).

A checkpoint is a directory: model.keras, tokenizer.json, meta.json, metrics.json.
"""
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import keras
from keras import layers, ops

from dataset import UserError
from tokenizer import Tokenizer

ARCHS = ("cnn", "textcnn", "bilstm", "mean")
EMBED_DIM = 128
HIDDEN = 128
DROPOUT = 0.5
MODEL_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE = "model.keras", "tokenizer.json", "meta.json", "metrics.json"


class CheckpointError(UserError):
    pass


# --- layers -------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tig")
class PaddingMask(layers.Layer):
    """token_ids -> bool mask of real (non-PAD) positions."""

    def call(self, token_ids):
        return ops.not_equal(token_ids, 0)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")


@keras.saving.register_keras_serializable(package="tig")
class ZeroPadding(layers.Layer):
    """Zero the vectors at PAD positions: (x [B,L,D], mask [B,L]) -> x * mask."""

    def call(self, x, mask):
        return x * ops.expand_dims(ops.cast(mask, x.dtype), -1)


@keras.saving.register_keras_serializable(package="tig")
class MaskedGlobalMaxPool(layers.Layer):
    """Max over real positions only; an all-PAD row pools to zeros."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True   # takes the mask explicitly; consumes an RNN's Keras mask

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def call(self, x, mask):
        m = ops.expand_dims(mask, -1)
        pooled = ops.max(ops.where(m, x, ops.full_like(x, -1e9)), axis=1)
        return ops.where(ops.any(m, axis=1), pooled, ops.zeros_like(pooled))


@keras.saving.register_keras_serializable(package="tig")
class MaskedMean(layers.Layer):
    """Mean over real positions only."""

    def call(self, x, mask):
        m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        return ops.sum(x * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


# --- architectures --------------------------------------------------------------------

def build_embedder(vocab_size, embed_dim=EMBED_DIM):
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    mask = PaddingMask(name="padding_mask")(token_ids)
    x = layers.Embedding(vocab_size, embed_dim, name="embedding")(token_ids)
    x = ZeroPadding(name="zero_padding")(x, mask)
    return keras.Model(token_ids, [x, mask], name="embedder")


def build_head(arch, num_classes, embed_dim=EMBED_DIM, dropout=DROPOUT, hidden=HIDDEN):
    embeddings = keras.Input(shape=(None, embed_dim), name="embeddings")
    mask = keras.Input(shape=(None,), dtype="bool", name="mask")
    # zero PAD again: interpolated/baseline inputs reach the head directly, and this makes
    # the gradient at PAD exactly 0, so padded positions get exactly zero attribution
    x = ZeroPadding(name="head_zero_padding")(embeddings, mask)
    x = layers.Dropout(dropout)(x)
    if arch == "cnn":
        x = layers.Conv1D(hidden, 3, padding="same", activation="relu", name="conv")(x)
        x = ZeroPadding()(x, mask)
        x = MaskedGlobalMaxPool(name="pool")(x, mask)
    elif arch == "textcnn":
        pooled = []
        for k in (2, 3, 4):
            c = layers.Conv1D(hidden, k, padding="same", activation="relu", name=f"conv{k}")(x)
            pooled.append(MaskedGlobalMaxPool(name=f"pool{k}")(c, mask))
        x = layers.Concatenate()(pooled)
    elif arch == "bilstm":
        x = layers.Bidirectional(layers.LSTM(hidden // 2, return_sequences=True), name="bilstm")(x, mask=mask)
        x = MaskedGlobalMaxPool(name="pool")(x, mask)
    elif arch == "mean":
        x = MaskedMean(name="pool")(x, mask)
    else:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    x = layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = layers.Dropout(dropout)(x)
    probs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model([embeddings, mask], probs, name="head")


def compose(embedder, head, name="classifier"):
    """model(token_ids) = head(*embedder(token_ids)) as one functional model."""
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embeddings, mask = embedder(token_ids)
    return keras.Model(token_ids, head([embeddings, mask]), name=name)


def build_model(arch, vocab_size, num_classes, embed_dim=EMBED_DIM, dropout=DROPOUT, hidden=HIDDEN):
    """hidden: conv filters (per kernel size), LSTM units (both directions) and dense width."""
    return compose(build_embedder(vocab_size, embed_dim), build_head(arch, num_classes, embed_dim, dropout, hidden))


def split_at_embedding(model, layer=None, inputs=None):
    """The model cut at its embedding, as an embedding_split.Split (unpacks as (embed, head)).

    For a model built by this file (the fast path, no interception):
    embed(token_ids) -> (embeddings [B,L,D] float32, mask [B,L] bool)
    head(embeddings, mask) -> probabilities [B,C]; head(*embed(ids)) == model(ids).
    Any other Keras model (or layer= naming another layer) is split by
    embedding_split.split_model, which needs example `inputs` to find the Embedding layer.
    """
    import numpy as np
    import tensorflow as tf
    from embedding_split import Split, split_model
    try:
        embedder, head = model.get_layer("embedder"), model.get_layer("head")
        embedding = embedder.get_layer("embedding")
    except (ValueError, AttributeError):
        embedder = None
    if embedder is None or layer not in (None, "embedding", embedding):
        if inputs is None and embedder is None:
            raise UserError(f"model {model.name!r} has no 'embedder'/'head' sub-models; "
                            "build it with model.build_model or model.compose, or pass inputs= to find its Embedding")
        return split_model(model, layer, inputs)

    def embed(token_ids):
        embeddings, mask = embedder(token_ids, training=False)
        return embeddings, mask

    def run_head(embeddings, mask):
        return head([embeddings, mask], training=False)

    def lookup(token_ids):
        from gradients import prepare_ids
        token_ids = prepare_ids(token_ids)
        embeddings, mask = embed(tf.constant(token_ids))
        return np.asarray(embeddings, np.float32), tf.constant(np.asarray(mask)), token_ids

    embed.layer, run_head.layer = embedder, head
    return Split(embed=embed, head=run_head, lookup=lookup, embed_ids=lambda ids: lookup(ids)[0],
                 layer=embedding, key=head, context_spec=tf.TensorSpec([None, None], tf.bool),
                 output_kind="softmax", own=True)


# --- checkpoints --------------------------------------------------------------------

@dataclass
class Checkpoint:
    model: keras.Model
    tokenizer: Tokenizer
    classes: list
    maxlen: int
    meta: dict
    directory: str = ""

    @property
    def metrics(self):
        path = os.path.join(self.directory, METRICS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def save_checkpoint(directory, model, tokenizer, meta, metrics=None):
    """Write a checkpoint atomically: into a sibling temp dir, then swap it into place,
    so a crash mid-save leaves the previous checkpoint intact."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".tmp-", dir=parent)
    try:
        model.save(os.path.join(tmp, MODEL_FILE))
        tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
        for name, obj in ((META_FILE, meta), (METRICS_FILE, metrics)):
            if obj is not None:
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    json.dump(obj, f, ensure_ascii=False, indent=2)
        old = None
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=os.path.basename(directory) + ".old-", dir=parent)
            os.rename(directory, os.path.join(old, "ckpt"))
        os.rename(tmp, directory)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory):
    """Reload a checkpoint written by train.py; checks the tokenizer matches the model."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint not found: {directory} (train one with: python train.py --task ...)")
    paths = {name: os.path.join(directory, name) for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE)}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
    try:
        with open(paths[META_FILE], encoding="utf-8") as f:
            meta = json.load(f)
        tokenizer = Tokenizer.load(paths[TOKENIZER_FILE])
    except (ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {directory}: {e}") from None
    try:
        model = keras.saving.load_model(paths[MODEL_FILE], compile=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {directory}: cannot load {MODEL_FILE} ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    vocab_size = model.get_layer("embedder").get_layer("embedding").input_dim
    if vocab_size != len(tokenizer):
        raise CheckpointError(f"checkpoint {directory}: tokenizer has {len(tokenizer)} tokens but the model's "
                              f"embedding has {vocab_size} rows; they do not belong together")
    classes = meta.get("classes", [])
    if model.output_shape[-1] != len(classes):
        raise CheckpointError(f"checkpoint {directory}: meta.json lists {len(classes)} classes but the model "
                              f"outputs {model.output_shape[-1]}")
    return Checkpoint(model, tokenizer, classes, int(meta["maxlen"]), meta, directory)
