"""Classifier architectures and their layers (checkpoints are in tig/checkpoint.py).

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

tig/embedding_split.py cuts these models at the embedder for the explainers (its fast path);
tig/checkpoint.py saves and loads them; SparseAdam (below) trains the fasttext n-gram tables.
"""
import re

import keras
from keras import layers, ops

from tig.defaults import ARCHS, DROPOUT, EMBED_DIM, HIDDEN
from tig.errors import UserError
from tig.tokenizer import PAD_ID

NGRAM_BUCKETS = 400_000       # fasttext: hashed rows per n-gram order (bigrams, trigrams), at most
NGRAM_ROWS_PER_TOKEN = 100    # ... and at most this many per vocabulary entry (small vocab, small table)
NGRAM_ORDERS = (2, 3)
NGRAM_HASH_MIX = 1_640_531_527   # fasttext: last hash step, code * this mod 2^31 - 1 (see HashedNgramEmbedding)
TRANSFORMER_LAYERS = 2
TRANSFORMER_HEADS = 4
ATTENTION_DROPOUT = 0.1
MAX_POSITIONS = 512           # learned positions; later positions reuse the last one


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

    def build(self, var_list):
        """Adam's slots, made as Adam.build makes them (same names and order, so the same
        optimizer.variables), but kept in public attributes with an index from each weight (and,
        under a tf.distribute strategy, each of its per-replica copies, which update_step is
        given) to its slots: momentums[i], velocities[i] (velocity_hats[i] with amsgrad)."""
        if self.built:
            return
        keras.optimizers.Optimizer.build(self, var_list)     # not Adam.build: the slots are made here
        self.momentums, self.velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        if self.amsgrad:
            self.velocity_hats = self.add_optimizer_variables(var_list, "velocity_hat")
        index = {}
        for i, variable in enumerate(var_list):
            value = variable.value if isinstance(variable, keras.Variable) else variable
            strategy = getattr(value, "distribute_strategy", None)
            for copy in (value,) + tuple(strategy.experimental_local_results(value) if strategy else ()):
                index[copy.ref()] = i
        self.slot_index = index

    def slot(self, variable):
        """The index of a weight's slots, from the weight as update_step gets it."""
        return self.slot_index[(variable.value if isinstance(variable, keras.Variable) else variable).ref()]

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf
        if not isinstance(gradient, tf.IndexedSlices):
            return self.dense_update_step(gradient, variable, learning_rate)
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
        i = self.slot(variable)
        m, v = self.momentums[i], self.velocities[i]
        m_rows = beta_1 * tf_gather_rows(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf_gather_rows(v, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    def dense_update_step(self, gradient, variable, learning_rate):
        """Keras 3.15's Adam.update_step, op for op, on the slots made in build."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        i = self.slot(variable)
        m, v = self.momentums[i], self.velocities[i]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self.velocity_hats[i]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon)))


def make_optimizer(arch, learning_rate, row_sgd=0.0, ngram_lr_scale=1.0):
    """Adam; for fasttext the lazy sparse variant, so a step costs the rows it touches
    (row_sgd > 0: SGD on the embedding rows, see SparseAdam)."""
    if arch == "fasttext":
        return SparseAdam(learning_rate, row_sgd=row_sgd, ngram_lr_scale=ngram_lr_scale)
    return keras.optimizers.Adam(learning_rate)
