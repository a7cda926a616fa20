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
bilstm (BiLSTM 64+64 -> masked max pool), mean (masked mean of embeddings), and:

  fasttext     characters plus hashed character bigrams and trigrams (fastText-style). The
               embedder outputs, per position i, u_i = c_i + (b_{i-1} + b_i)/2 +
               (t_{i-2} + t_{i-1} + t_i)/3, where b_j / t_j embed the bigram / trigram
               starting at j (zero unless made only of known characters). The head
               mean-pools u over real positions before anything nonlinear, so every
               position gets the same gradient: any attribution of an n-gram is shared
               equally among the characters it covers, and per-character scores still
               add up to F(x) - F(x').
  transformer  a small pre-LayerNorm encoder: learned positions are added inside the head
               (so attributions stay on token embeddings), TRANSFORMER_LAYERS layers of
               multi-head self-attention whose keys are masked to real tokens, masked
               mean pooling.

`init_from_checkpoint` copies another checkpoint's weights into a new model where shapes
allow (train.py --init-from).

A checkpoint is a folder with a pointer to its current version (model.keras, tokenizer.json,
meta.json, metrics.json); see the checkpoints section.
"""
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass

import keras
from keras import layers, ops

from cli import UserError, has_control
from tokenizer import PAD_ID, Tokenizer

ARCHS = ("cnn", "textcnn", "bilstm", "mean", "fasttext", "transformer")
EMBED_DIM = 128
HIDDEN = 128
DROPOUT = 0.5
NGRAM_BUCKETS = 400_000       # fasttext: hashed rows per n-gram order (bigrams, trigrams), at most
NGRAM_ROWS_PER_TOKEN = 100    # ... and at most this many per vocabulary entry (small vocab, small table)
NGRAM_ORDERS = (2, 3)
NGRAM_HASH_MIX = 1_640_531_527   # fasttext: last hash step, code * this mod 2^31 - 1 (see HashedNgramEmbedding)
TRANSFORMER_LAYERS = 2
TRANSFORMER_HEADS = 4
ATTENTION_DROPOUT = 0.1
MAX_POSITIONS = 512           # learned positions; later positions reuse the last one
MODEL_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE = "model.keras", "tokenizer.json", "meta.json", "metrics.json"


class CheckpointError(UserError):
    pass


# --- layers -------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tig")
class PaddingMask(layers.Layer):
    """token_ids -> bool mask of real (non-PAD) positions."""

    def call(self, token_ids):
        return ops.not_equal(token_ids, PAD_ID)

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


def tf_gather_rows(variable, index):
    """variable[index] via TensorFlow's ResourceGather (touches only those rows)."""
    import tensorflow as tf
    return tf.gather(variable.value, index)


@keras.saving.register_keras_serializable(package="tig")
class HashedNgramEmbedding(layers.Layer):
    """token_ids [B,L] -> the n-gram share of u: sum_{k<n} e_{i-k} / n  [B,L,D].

    e_j embeds the n-gram of token ids starting at j, hashed into `buckets` rows; it is zero
    unless all n tokens are known characters (not PAD, UNK or MASK), so PAD never gets a
    share and appending PAD changes nothing. The hash is of token ids, so the rows belong to
    the tokenizer the model was trained with.

    The hash is a polynomial in the ids modulo the prime 2^31 - 1, times `mix` (modulo the
    same prime), then modulo `buckets`. Without the mixing (mix=1, how checkpoints saved
    before it load) the bigram codes bunch up modulo the bucket count: THUCNews's 518,676
    distinct character bigrams fell into 22,188 of 120,000 rows (with it: 119,074, as
    many as a random hash fills), and the test accuracy was 1.2 points lower (RESULTS.md).
    """

    def __init__(self, order, buckets, output_dim, mix=1, **kwargs):
        super().__init__(**kwargs)
        self.order, self.buckets, self.output_dim, self.mix = int(order), int(buckets), int(output_dim), int(mix)

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.buckets, self.output_dim), name="table",
                                     initializer=keras.initializers.RandomUniform(-0.05, 0.05))

    @staticmethod
    def shift_left(x, k):
        """x[:, j + k], padded with zeros past the end (any length, even shorter than k)."""
        pad = [[0, 0], [0, k]] + [[0, 0]] * (len(x.shape) - 2)
        return ops.pad(x, pad)[:, k:]

    @staticmethod
    def shift_right(x, k):
        length = ops.shape(x)[1]
        pad = [[0, 0], [k, 0]] + [[0, 0]] * (len(x.shape) - 2)
        return ops.pad(x, pad)[:, :length]

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int64")
        known = ops.cast(ops.greater_equal(ids, 3), "int64")     # PAD=0, UNK=1, MASK=2 start no n-gram
        modulus, prime = 2_147_483_647, 1_000_003
        code = ops.full_like(ids, self.order)                    # salt: bigrams and trigrams differ
        valid = ops.ones_like(ids)
        for k in range(self.order):
            code = ops.mod(code * prime + self.shift_left(ids, k), modulus)
            valid = valid * self.shift_left(known, k)
        code = ops.mod(code * self.mix, modulus)                 # both factors < 2^31: no int64 overflow
        # a gather from the variable itself (not from a read of the whole table): reading it
        # would make the optimizer's in-place row update copy the full table every step
        rows = tf_gather_rows(self.table, ops.mod(code, self.buckets))
        rows = rows * ops.expand_dims(ops.cast(valid, rows.dtype), -1)
        spread = rows
        for k in range(1, self.order):     # position i collects the n-grams starting at i-k
            spread = spread + self.shift_right(rows, k)
        return spread / float(self.order)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "order": self.order, "buckets": self.buckets,
                "output_dim": self.output_dim, "mix": self.mix}


@keras.saving.register_keras_serializable(package="tig")
class PositionEmbedding(layers.Layer):
    """x [B,L,D] -> x + P[min(i, max_positions - 1)] with learned P."""

    def __init__(self, max_positions, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = int(max_positions)

    def build(self, input_shape):
        self.positions = self.add_weight(shape=(self.max_positions, input_shape[-1]), name="positions",
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, x):
        index = ops.minimum(ops.arange(ops.shape(x)[1]), self.max_positions - 1)
        return x + ops.expand_dims(ops.take(self.positions, index, axis=0), 0)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions}


@keras.saving.register_keras_serializable(package="tig")
class KeyPaddingMask(layers.Layer):
    """mask [B,L] -> attention mask [B,L,L]: every query attends to real keys only."""

    def call(self, mask):
        return ops.logical_and(ops.expand_dims(ops.ones_like(mask), 2), ops.expand_dims(mask, 1))

    def compute_output_spec(self, mask):
        return keras.KerasTensor((mask.shape[0], mask.shape[1], mask.shape[1]), dtype="bool")


# --- architectures --------------------------------------------------------------------

def build_embedder(vocab_size, embed_dim=EMBED_DIM, arch=None, ngram_buckets=None):
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    mask = PaddingMask(name="padding_mask")(token_ids)
    x = layers.Embedding(vocab_size, embed_dim, name="embedding")(token_ids)
    if arch == "fasttext":   # u_i = c_i + each covering n-gram's share (see the docstring)
        ngram_buckets = ngram_buckets or min(NGRAM_BUCKETS, NGRAM_ROWS_PER_TOKEN * vocab_size)
        for n in NGRAM_ORDERS:
            x = layers.Add(name=f"add_{n}grams")(
                [x, HashedNgramEmbedding(n, ngram_buckets, embed_dim, mix=NGRAM_HASH_MIX,
                                         name=f"ngram{n}_embedding")(token_ids)])
    x = ZeroPadding(name="zero_padding")(x, mask)
    return keras.Model(token_ids, [x, mask], name="embedder")


def build_head(arch, num_classes, embed_dim=EMBED_DIM, dropout=DROPOUT, hidden=HIDDEN):
    embeddings = keras.Input(shape=(None, embed_dim), name="embeddings")
    mask = keras.Input(shape=(None,), dtype="bool", name="mask")
    # zero PAD again: interpolated/baseline inputs reach the head directly, and this makes
    # the gradient at PAD exactly 0, so padded positions get exactly zero attribution
    x = ZeroPadding(name="head_zero_padding")(embeddings, mask)
    if arch != "fasttext":     # fasttext drops out of the mean instead (below)
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
    elif arch == "fasttext":   # the mean comes first, so n-gram shares stay exact
        x = layers.Dropout(dropout)(MaskedMean(name="pool")(x, mask))
    elif arch == "transformer":
        x = transformer_encoder(x, mask, embed_dim, hidden)
    else:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    if hidden:   # hidden=0 (fasttext only): the linear fastText head, mean -> softmax
        x = layers.Dense(hidden, activation="relu", name="hidden")(x)
        x = layers.Dropout(dropout)(x)
    elif arch != "fasttext":
        raise UserError(f"hidden width 0 (no hidden layer) is for --arch fasttext only, not {arch}")
    probs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model([embeddings, mask], probs, name="head")


def transformer_encoder(x, mask, embed_dim, hidden, num_layers=TRANSFORMER_LAYERS, heads=TRANSFORMER_HEADS):
    """Pre-LayerNorm encoder blocks on [B,L,D] -> masked mean [B,D]. PAD keys are masked, so PAD
    positions never reach a real one, and pooling skips them: appending PAD changes nothing."""
    if embed_dim % heads:
        raise UserError(f"--embed-dim {embed_dim} must be a multiple of {heads} attention heads")
    attention_mask = KeyPaddingMask(name="attention_mask")(mask)
    x = PositionEmbedding(MAX_POSITIONS, name="positions")(x)
    for i in range(num_layers):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = layers.MultiHeadAttention(heads, embed_dim // heads, dropout=ATTENTION_DROPOUT,
                                      name=f"block{i}_attention")(h, h, attention_mask=attention_mask)
        x = layers.Add()([x, layers.Dropout(ATTENTION_DROPOUT)(h)])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = layers.Dense(2 * hidden, activation="gelu", name=f"block{i}_ff1")(h)
        h = layers.Dense(embed_dim, name=f"block{i}_ff2")(h)
        x = layers.Add()([x, layers.Dropout(ATTENTION_DROPOUT)(h)])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return MaskedMean(name="pool")(x, mask)


def compose(embedder, head, name="classifier"):
    """model(token_ids) = head(*embedder(token_ids)) as one functional model."""
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embeddings, mask = embedder(token_ids)
    return keras.Model(token_ids, head([embeddings, mask]), name=name)


def build_model(arch, vocab_size, num_classes, embed_dim=EMBED_DIM, dropout=DROPOUT, hidden=HIDDEN,
                ngram_buckets=None):
    """hidden: conv filters (per kernel size), LSTM units (both directions) and dense width.
    ngram_buckets: fasttext's hashed rows per n-gram order (default: see build_embedder)."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return compose(build_embedder(vocab_size, embed_dim, arch, ngram_buckets),
                   build_head(arch, num_classes, embed_dim, dropout, hidden))


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
#
# A checkpoint folder holds versions and a pointer to the current one:
#
#     <dir>/CURRENT              the name of the current version (replaced atomically)
#     <dir>/v-<time>-<pid>/      model.keras, tokenizer.json, meta.json, metrics.json
#
# Saving writes a new version under a temporary name, renames it, then replaces CURRENT, all
# under a lock; so at every instant CURRENT names a complete version (a crash or a kill leaves
# the previous one loadable), and two concurrent writers end with one complete checkpoint.
# Stale versions and the temporary folders of dead processes are removed by the next save.
# Folders in the older flat layout (the four files directly in <dir>) still load.

POINTER_FILE, LOCK_FILE = "CURRENT", ".lock"
CHECKPOINT_FILES = (MODEL_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE)
VERSION_NAME = re.compile(r"v-[0-9]+-[0-9]+")
TEMP_NAME = re.compile(r"\.tmp-([0-9]+)-[0-9a-z_]+")
POINTER_TEMP = re.compile(r"\.?" + re.escape(POINTER_FILE) + r"\.tmp-.+")   # atomic_write's temp name for CURRENT


@dataclass
class Checkpoint:
    model: keras.Model
    tokenizer: Tokenizer
    classes: list
    maxlen: int
    meta: dict
    directory: str = ""     # the folder the user named
    files: str = ""         # the folder holding this version's files

    @property
    def metrics(self):
        path = os.path.join(self.files or self.directory, METRICS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def is_checkpoint_dir(path):
    """A folder written by save_checkpoint (or the older flat layout), verified: see checkpoint_meta."""
    return checkpoint_meta(path) is not None


def checkpoint_meta(path):
    """The meta of the checkpoint of this project in folder `path`, or None when it is not verifiably
    one. File names prove nothing (a LevelDB folder has a CURRENT file too): CURRENT must name a
    version folder whose meta.json is a valid meta of this project; a flat checkpoint must hold the
    three files with such a meta.json."""
    pointer = os.path.join(path, POINTER_FILE)
    try:
        if os.path.isfile(pointer):
            with open(pointer, "rb") as f:
                name = f.read(200).decode("utf-8").strip()
            if not VERSION_NAME.fullmatch(name) or not os.path.isdir(os.path.join(path, name)):
                return None
            files = os.path.join(path, name)
        else:
            files = path
        if not all(os.path.isfile(os.path.join(files, n)) for n in (MODEL_FILE, TOKENIZER_FILE, META_FILE)):
            return None
        with open(os.path.join(files, META_FILE), encoding="utf-8") as f:
            meta = json.loads(f.read(1 << 20))
        validate_meta(meta, path)
        return meta
    except (OSError, ValueError, CheckpointError):
        return None


def enclosing_checkpoint(path):
    """The checkpoint folder `path` lies inside (a version folder, or deeper), or None."""
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if os.path.isfile(os.path.join(parent, POINTER_FILE)) or checkpoint_meta(parent) is not None:
            return parent
        parent = os.path.dirname(parent)
    return None


def _only_our_leftovers(path):
    """True when every entry is something save_checkpoint makes (an interrupted first save)."""
    return all(name == LOCK_FILE or VERSION_NAME.fullmatch(name) or TEMP_NAME.fullmatch(name)
               or POINTER_TEMP.fullmatch(name) for name in os.listdir(path))


def check_checkpoint_target(directory, task=None, arch=None, replace_different=False):
    """Refuse, before any training, an --out that is not a new path, an empty folder, or a
    checkpoint of this project; one inside a checkpoint; one that cannot be written; and a
    checkpoint of another task or architecture (given task/arch) unless replace_different."""
    if not directory or not str(directory).strip():
        raise CheckpointError("--out must not be empty")
    directory = os.path.abspath(directory)
    inside = enclosing_checkpoint(directory)
    if inside is not None:
        raise CheckpointError(f"refusing to write a checkpoint to {directory}: it is inside the checkpoint "
                              f"{inside} (nothing was touched); give a folder outside it")
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise CheckpointError(f"refusing to write a checkpoint to {directory}: it is an existing file")
        meta = checkpoint_meta(directory)
        if os.listdir(directory) and meta is None and not _only_our_leftovers(directory):
            raise CheckpointError(f"refusing to write a checkpoint into {directory}: the folder is not empty and "
                                  "is not a checkpoint of this project (nothing in it was touched); give a new "
                                  "or empty folder")
        different = [f"{what} {meta.get(what)!r}, not {want!r}" for what, want in (("task", task), ("arch", arch))
                     if meta is not None and want is not None and meta.get(what) != want]
        if different and not replace_different:
            raise CheckpointError(f"refusing to replace the checkpoint {directory}: it was trained for "
                                  f"{' and '.join(different)} (nothing was touched); give another --out, or "
                                  "--replace-different to replace it")
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write a checkpoint to {directory}: {existing} is not a writable folder")
    return directory


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def save_checkpoint(directory, model, tokenizer, meta, metrics=None, replace_different=False):
    """Write a new version of the checkpoint in `directory` and make it current, atomically.

    The folder must be new, empty, or a checkpoint of this project (see check_checkpoint_target) of
    the same task and architecture as meta's, unless replace_different.
    meta gets the tokenizer's fingerprint, which load_checkpoint verifies.
    """
    from cli import atomic_write
    directory = check_checkpoint_target(directory, meta.get("task") if isinstance(meta, dict) else None,
                                        meta.get("arch") if isinstance(meta, dict) else None, replace_different)
    os.makedirs(directory, exist_ok=True)
    meta = {**meta, "tokenizer_sha256": tokenizer.fingerprint()}
    validate_meta(meta, directory)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)   # permissions follow the umask (unlike mkdtemp's 0700)
    try:
        save_model_weights_only(model, os.path.join(tmp, MODEL_FILE))
        tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
        _write_json(os.path.join(tmp, META_FILE), meta)
        if metrics is not None:
            _write_json(os.path.join(tmp, METRICS_FILE), metrics)
        with open(os.path.join(directory, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # one commit at a time; released when the file closes
            version = f"v-{time.time_ns()}-{os.getpid()}"
            os.rename(tmp, os.path.join(directory, version))
            atomic_write(os.path.join(directory, POINTER_FILE), version + "\n")
            _remove_stale(directory, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_model_weights_only(model, path):
    """Save the model's architecture and weights, without the optimizer state or compile settings.

    A .keras file of a compiled model carries the optimizer's slots (Adam: two per weight), which
    for the fasttext n-gram tables tripled the file (1.2 GB); explaining and --init-from need the
    weights only. Keras 3 ignores include_optimizer for .keras files, so an uncompiled copy of the
    model is saved instead (the model itself is not touched). Older checkpoints that hold an
    optimizer still load: load_checkpoint loads with compile=False.
    """
    bare = model.__class__.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    bare.save(path)
    return path


def _remove_stale(directory, current):
    """Delete what earlier saves left: other versions, temp folders of dead processes, and the
    files of the older flat layout. Only names that save_checkpoint itself makes are touched."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        temp = TEMP_NAME.fullmatch(name)
        if ((VERSION_NAME.fullmatch(name) and name != current) or (temp and not _alive(int(temp.group(1))))
                or POINTER_TEMP.fullmatch(name)):   # under the lock, no live writer owns a pointer temp
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        elif name in CHECKPOINT_FILES and os.path.isfile(path):
            os.remove(path)


def current_version(directory):
    """The folder holding the current files of a checkpoint (versioned or flat layout)."""
    pointer = os.path.join(directory, POINTER_FILE)
    if not os.path.exists(pointer):
        return directory
    for _ in range(3):   # a concurrent save may replace the version between our two reads
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        if not VERSION_NAME.fullmatch(name):
            raise CheckpointError(f"checkpoint {directory}: {POINTER_FILE} does not name a version ({name[:40]!r})")
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            return path
    raise CheckpointError(f"checkpoint {directory}: {POINTER_FILE} names {name}, which does not exist")


def checkpoint_time(directory):
    """When the checkpoint in `directory` was last saved (None if it is not one)."""
    for name in (POINTER_FILE, META_FILE):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return os.path.getmtime(path)
    return None


META_FIELDS = {   # field -> (check, what it must be); fields not listed are informational
    "task": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "classes": (lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(c, str) and c for c in v)
                and len(set(v)) == len(v) and not any(has_control(c) for c in v),
                "a list of at least 2 distinct non-empty strings without control characters"),
    "maxlen": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
}
OPTIONAL_META_FIELDS = {
    "arch": (lambda v: isinstance(v, str), "a string"),
    "level": (lambda v: v in ("char", "word"), "'char' or 'word'"),
    "mask_rate": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
    "tokenizer_sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v), "a sha256 hex digest"),
}


def validate_meta(meta, where):
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: {META_FILE} must hold a JSON object")
    for field, (ok, what) in META_FIELDS.items():
        if field not in meta:
            raise CheckpointError(f"{where}: {META_FILE} has no field {field!r}")
        if not ok(meta[field]):
            raise CheckpointError(f"{where}: {META_FILE} field {field!r} must be {what}, got {meta[field]!r:.60}")
    for field, (ok, what) in OPTIONAL_META_FIELDS.items():
        if field in meta and not ok(meta[field]):
            raise CheckpointError(f"{where}: {META_FILE} field {field!r} must be {what}, got {meta[field]!r:.60}")


def load_checkpoint(directory):
    """Reload a checkpoint written by train.py, checking that its parts belong together."""
    from validate import check_path
    check_path(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint not found: {directory} (train one with: python train.py --task ...)")
    files = current_version(directory)
    paths = {name: os.path.join(files, name) for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE)}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
    try:
        with open(paths[META_FILE], encoding="utf-8") as f:
            meta = json.load(f)
        tokenizer = Tokenizer.load(paths[TOKENIZER_FILE])
    except (ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {directory}: {e}") from None
    validate_meta(meta, f"checkpoint {directory}")
    if "tokenizer_sha256" not in meta:
        raise CheckpointError(f"checkpoint {directory}: {META_FILE} has no tokenizer_sha256, so {TOKENIZER_FILE} "
                              "cannot be checked against the model; retrain it with train.py")
    if meta["tokenizer_sha256"] != tokenizer.fingerprint():
        raise CheckpointError(f"checkpoint {directory}: {TOKENIZER_FILE} is not the vocabulary the model was trained "
                              f"with (its fingerprint differs from the one in {META_FILE})")
    try:
        model = keras.saving.load_model(paths[MODEL_FILE], compile=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {directory}: cannot load {MODEL_FILE} ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    vocab_size = model.get_layer("embedder").get_layer("embedding").input_dim
    if vocab_size != len(tokenizer):
        raise CheckpointError(f"checkpoint {directory}: tokenizer has {len(tokenizer)} tokens but the model's "
                              f"embedding has {vocab_size} rows; they do not belong together")
    classes = meta["classes"]
    if model.output_shape[-1] != len(classes):
        raise CheckpointError(f"checkpoint {directory}: meta.json lists {len(classes)} classes but the model "
                              f"outputs {model.output_shape[-1]}")
    return Checkpoint(model, tokenizer, classes, meta["maxlen"], meta, directory, files)


# --- training -----------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tig")
class SparseAdam(keras.optimizers.Adam):
    """Adam that updates only the embedding rows a batch used ("lazy" Adam, as in TF Addons).

    Keras 3's Adam turns a sparse embedding gradient into a dense update of the whole table,
    which for the fasttext n-gram tables (2 x NGRAM_BUCKETS rows) costs about a second per
    step on 2 cores. Dense gradients get the usual Adam update.

    row_sgd > 0: embedding rows get plain SGD instead, row -= learning_rate * row_sgd * gradient
    (fastText's update: a row moves with its gradient, so rare n-grams move little; Adam's
    per-coordinate normalisation moves them as fast as frequent ones).

    Lazy is enough here: a variant that, on a row's next use, first applied in closed form
    the steps dense Adam's decaying momentum would have made while the row was unused
    trained to the same test accuracy on THUCNews (0.9230 vs 0.9238; RESULTS.md).
    """

    def __init__(self, *args, row_sgd=0.0, ngram_lr_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_sgd = float(row_sgd)
        self.ngram_lr_scale = float(ngram_lr_scale)

    def get_config(self):
        return {**super().get_config(), "row_sgd": self.row_sgd, "ngram_lr_scale": self.ngram_lr_scale}

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        if self.row_sgd > 0:
            scale = ops.cast(learning_rate, variable.dtype) * self.row_sgd
            return self.assign_sub(variable, tf.IndexedSlices(scale * tf.cast(gradient.values, variable.dtype),
                                                              gradient.indices, gradient.dense_shape))
        rows, position = tf.unique(gradient.indices)     # a row used twice in a batch: one update
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, variable.dtype), position, tf.shape(rows)[0])
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, variable.dtype), ops.cast(self.beta_2, variable.dtype)
        alpha = lr * ops.sqrt(1 - ops.power(beta_2, step)) / (1 - ops.power(beta_1, step))
        if re.search(r"(^|/)table(:[0-9]+)?$", variable.name):   # a HashedNgramEmbedding's rows
            alpha = alpha * self.ngram_lr_scale
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = beta_1 * tf_gather_rows(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf_gather_rows(v, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(arch, learning_rate, row_sgd=0.0, ngram_lr_scale=1.0):
    """Adam; for fasttext the lazy sparse variant, so a step costs the rows it touches
    (row_sgd > 0: SGD on the embedding rows, see SparseAdam)."""
    if arch == "fasttext":
        return SparseAdam(learning_rate, row_sgd=row_sgd, ngram_lr_scale=ngram_lr_scale)
    return keras.optimizers.Adam(learning_rate)


# --- transfer -----------------------------------------------------------------------

def init_from_checkpoint(model, tokenizer, directory, classes):
    """Start `model` (just built for `tokenizer` and `classes`) from checkpoint `directory`.

    Embedding rows are mapped token by token through the two vocabularies (tokens the source
    never saw keep their fresh rows); every other layer of the same name and weight shapes is
    copied, except the output layer when the classes differ (a new task gets a new one).
    Hashed n-gram rows are keyed by token ids, so they are copied only when both vocabularies
    are identical. Refuses, with a CheckpointError, a checkpoint of another architecture,
    token level or embedding size. Returns a summary dict; the source model is not modified.
    """
    source = load_checkpoint(directory)
    src_embedder, dst_embedder = source.model.get_layer("embedder"), model.get_layer("embedder")
    src_table, dst_table = src_embedder.get_layer("embedding"), dst_embedder.get_layer("embedding")
    src_arch = source.meta.get("arch")
    dst_arch = "fasttext" if any(isinstance(l, HashedNgramEmbedding) for l in dst_embedder.layers) else None
    problems = []
    if source.tokenizer.level != tokenizer.level:
        problems.append(f"{source.tokenizer.level} tokens, not {tokenizer.level}")
    if src_table.output_dim != dst_table.output_dim:
        problems.append(f"embedding size {src_table.output_dim}, not {dst_table.output_dim}")
    src_heads = {l.name: l for l in source.model.get_layer("head").layers if l.weights}
    dst_heads = {l.name: l for l in model.get_layer("head").layers if l.weights}
    if set(src_heads) != set(dst_heads) or (src_arch == "fasttext") != (dst_arch == "fasttext"):
        problems.append(f"architecture {src_arch!r} does not match the model being trained")
    if problems:
        raise CheckpointError(f"cannot initialise from {directory}: it has " + "; ".join(problems))

    weights = dst_table.get_weights()[0].copy()
    source_rows = src_table.get_weights()[0]
    mapped = 0
    for row, token in enumerate(tokenizer.vocab):
        src_row = source.tokenizer.index.get(token)
        if src_row is not None:
            weights[row] = source_rows[src_row]
            mapped += 1
    dst_table.set_weights([weights])
    copied, fresh = ["embedding"], []
    for layer in dst_embedder.layers:
        if isinstance(layer, HashedNgramEmbedding):
            if source.tokenizer.vocab == tokenizer.vocab:
                layer.set_weights(src_embedder.get_layer(layer.name).get_weights())
                copied.append(layer.name)
            else:
                fresh.append(layer.name)
    for name, layer in dst_heads.items():
        src_weights = src_heads[name].get_weights()
        same_shapes = [w.shape for w in src_weights] == [tuple(w.shape) for w in layer.weights]
        if same_shapes and (name != "probs" or list(source.classes) == list(classes)):
            layer.set_weights(src_weights)
            copied.append(name)
        else:
            fresh.append(name)
    return {"checkpoint": source.directory, "embedding_rows_mapped": mapped, "vocabulary": len(tokenizer),
            "copied": copied, "fresh": fresh}
