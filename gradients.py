"""Vanilla gradients per token (saliency and gradient x input), and the shared `Attribution`.

For a model F (class probabilities, or [1-p, p] for one sigmoid unit, or raw scores) split at
its Embedding layer (model.split_at_embedding: model.py's models, or any Keras 3 model through
embedding_split.py), x = the Embedding layer's output [B,L,D] and target class t:

    saliency:          score_i = || dF_t/dx_i ||_2             (unsigned; times_input=False)
    gradient x input:  score_i = sum_d x_id * dF_t/dx_id        (signed;   times_input=True)

Scores are exactly 0.0 at PAD (id 0) positions: models from model.py zero PAD embeddings
inside the head, so their gradient there is exactly zero, and scores are masked as well.
"""
import os
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from embedding_split import Split
from model import split_at_embedding

REDUCTIONS = ("sum", "l2")
COMPLETENESS_TOLERANCE = 0.01   # an IG explanation is "complete" when |delta| <= 1% of |F(x) - F(x')|
FLOATS_IN_FLIGHT = 1 << 23      # default budget: embedding floats per forward/backward chunk (32 MB)
# static-shape chunks are smaller (8 MB: 64 inputs at L=256, D=128): hotel IG 64x50 measured 4.2 s
# at 64 rows per chunk vs 5.3 s at 256 with XLA (same run and inputs; bench.py times both floors in these chunks)
STATIC_FLOATS_IN_FLIGHT = 1 << 21
# XLA (jit_compile) for model.py's models, on by default: measured faster on CPU (bench.py prints
# both floors) with gradients equal to ~1e-7 relative. TIG_XLA=0 (or xla=False) turns it off.
# Never for other models: they may hold string ops, which have no XLA kernels.
XLA = os.environ.get("TIG_XLA", "1") != "0"


@dataclass
class Attribution:
    """Per-token scores for a batch. scores [B,L] (0.0 at PAD), target [B], probs [B,C].

    token_ids: the ids the Embedding layer received (for string inputs: the TextVectorization output).
    tokens: per text, the token at each position up to the last non-PAD one (when a vocabulary
        is known: a TextVectorization layer inside the model, or `vocabulary=` given).
    output_kind: "softmax", "sigmoid" (probs = [1-p, p]) or "raw" (probs holds raw scores,
        not probabilities; a single raw unit z is shown as [-z, z]).
    """
    scores: np.ndarray
    target: np.ndarray
    probs: np.ndarray
    token_ids: np.ndarray
    method: str
    delta: np.ndarray = None        # IG only: (F(x) - F(x')) - sum(scores), the completeness gap
    steps: np.ndarray = None        # IG only: steps used per sample
    baseline: str = None            # IG only: name of the baseline
    output: np.ndarray = None       # F_t(x)
    baseline_output: np.ndarray = None  # IG only: F_t(x')
    tokens: list = None
    output_kind: str = "softmax"
    layer: str = None               # name of the Embedding layer the scores are taken at

    def complete(self, tolerance=COMPLETENESS_TOLERANCE):
        """IG only: per text, whether |delta| <= tolerance * |F(x) - F(x')|."""
        return np.abs(self.delta) <= tolerance * np.abs(self.output - self.baseline_output)

    def _repr_html_(self):
        """Jupyter shows the scores inline: each token on a background coloured by its score."""
        from render import attribution_html
        return attribution_html(self)


def as_split(model, inputs=None, layer=None):
    """A Split: from a model (model.py's or any Keras model with an Embedding layer), an
    (embed, head) pair of model.py's form, or a Split as given."""
    if isinstance(model, Split):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        embed, head = model

        def lookup(token_ids):
            token_ids = prepare_ids(token_ids)
            embeddings, mask = embed(tf.constant(token_ids))
            return np.asarray(embeddings, np.float32), tf.constant(np.asarray(mask)), token_ids
        return Split(embed=embed, head=head, lookup=lookup, embed_ids=lambda ids: lookup(ids)[0],
                     layer=getattr(embed, "layer", None), key=getattr(head, "layer", head),
                     context_spec=tf.TensorSpec([None, None], tf.bool))
    return split_at_embedding(model, layer, inputs)




def tokens_of(token_ids, vocabulary):
    """Per row, the vocabulary entry at each position up to the last non-PAD one."""
    if vocabulary is None:
        return None
    out = []
    for row in np.asarray(token_ids):
        real = np.flatnonzero(row != 0)
        end = real[-1] + 1 if len(real) else 0
        out.append([vocabulary[i] if 0 <= i < len(vocabulary) else "" for i in row[:end]])
    return out


def prepare_ids(token_ids):
    token_ids = np.asarray(token_ids)
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    if token_ids.ndim != 2 or token_ids.shape[0] == 0 or token_ids.shape[1] == 0:
        raise ValueError(f"token_ids must be a non-empty [batch, length] array, got shape {token_ids.shape}")
    if not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(f"token_ids must be integers, got {token_ids.dtype}")
    return token_ids.astype(np.int32)


def resolve_target(target, probs):
    """None -> predicted class; an int -> that class for every sample; an array -> per sample."""
    batch, classes = probs.shape
    if target is None:
        return probs.argmax(-1).astype(np.int32)
    target = np.broadcast_to(np.asarray(target, dtype=np.int32), (batch,)).copy()
    if target.min() < 0 or target.max() >= classes:
        raise ValueError(f"target must be a class index in 0..{classes - 1}, got {target}")
    return target


def reduce_scores(contributions, mask, reduce):
    """[B,L,D] per-dimension contributions -> [B,L] scores, exactly 0 at PAD."""
    if reduce == "sum":
        scores = contributions.sum(-1)
    elif reduce == "l2":
        scores = np.sqrt((contributions.astype(np.float64) ** 2).sum(-1))
    else:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return np.where(mask, scores, 0.0).astype(np.float32)


# --- static shapes ------------------------------------------------------------------
#
# A graph traced on concrete shapes runs about twice as fast on CPU as one with None dims, and
# XLA needs them. model.py's models are padding-invariant (PAD columns with mask False change
# nothing, exactly: tests/test_attributions.py), so for them lengths are padded up to a bucket
# (16, 24, 32, 48, 64, 96, ...: at most 1.5x the real length) and batches are streamed in chunks
# of a fixed size, the last one padded with copies up to a power of two (outputs discarded).
# Each (bucket, chunk size) pair is traced once. Other models keep the None-dim graphs.

def bucket_length(length):
    """The smallest of 16, 24, 32, 48, 64, 96, ... (2^k and 1.5 * 2^k) that holds `length`."""
    bucket = 16
    while bucket < length:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


def chunk_cap(length, dim, batch_size=None):
    """Rows per static chunk: batch_size if given, else as many as fit STATIC_FLOATS_IN_FLIGHT."""
    return max(1, int(batch_size) if batch_size else STATIC_FLOATS_IN_FLIGHT // (length * dim))


def chunks(total, cap):
    """(start, size, padded size) covering range(total): chunks of `cap` rows, the last one padded
    up to a power of two (at most cap), so only log2(cap) + 2 distinct sizes ever run."""
    for start in range(0, total, cap):
        size = min(cap, total - start)
        yield start, size, size if size == cap else min(cap, 1 << (size - 1).bit_length())


def pad_rows(array, rows):
    """array [n, ...] -> [rows, ...], repeating the last row (real data, discarded afterwards)."""
    if len(array) == rows:
        return array
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def pad_length(array, length):
    """array [n, l, ...] -> [n, length, ...] with zeros (PAD, mask False, zero embedding) at the end."""
    if array.shape[1] == length:
        return array
    pad = [(0, 0), (0, length - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad)


def use_xla(split, xla=None):
    """The XLA rule: only model.py's models (static shapes, no string ops); xla=None -> XLA."""
    return bool(split.own and (XLA if xla is None else xla))


def exact_shapes(split):
    """The same split run on the None-dim graphs (what every model used before static shapes)."""
    return replace(split, own=False, key=("exact shapes", split.key))


_TRACED = {}   # (split key, kind) -> tf.function, kept for the life of the process


def traced(split, kind, build):
    """The tf.function `build(split)`, made once per split key and kind. Splits are cheap
    objects made on every call; the key is the Keras model (part) they wrap."""
    key = (split.key if isinstance(split, Split) else getattr(split, "layer", split), kind)
    if key not in _TRACED:
        _TRACED[key] = build(split)
    return _TRACED[key]


def tile_batch(context, times):
    """Repeat a context tensor `times` times along its batch axis (any rank)."""
    return tf.tile(context, tf.concat([[times], tf.ones([tf.rank(context) - 1], tf.int32)], 0))


def gradient_of_target(head):
    """(embeddings, context, target) -> (dF_t/dx, F_t), the body of every gradient graph."""
    def fn(embeddings, context, target):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            selected = tf.gather(head(embeddings, context), target, axis=1, batch_dims=1)
        # samples are independent, so the gradient of the sum is each sample's own gradient
        return tape.gradient(selected, embeddings), selected
    return fn


def static_gradient_fn(split, xla):
    """Like target_gradient_fn, traced once per concrete shape (model.py's models), XLA if xla."""
    return traced(split, ("static_gradient", xla),
                  lambda split: tf.function(gradient_of_target(split.head), jit_compile=xla))


def static_outputs_fn(split, xla):
    return traced(split, ("static_outputs", xla), lambda split: tf.function(split.head, jit_compile=xla))


def run_static(fn, arrays, length, cap):
    """Call fn on arrays [n, l, ...] (first two padded to `length`) in static chunks; returns fn's
    outputs (numpy, each [n, ...]) with padded rows dropped and padded columns cut back to l."""
    n, real_length = arrays[0].shape[:2]
    padded = [pad_length(a, length) if i < 2 else a for i, a in enumerate(arrays)]
    parts = []
    for start, size, rows in chunks(n, cap):
        out = fn(*(tf.constant(pad_rows(a[start:start + size], rows)) for a in padded))
        out = out if isinstance(out, (tuple, list)) else (out,)
        parts.append([np.asarray(o)[:size] for o in out])
    outs = [np.concatenate(p) for p in zip(*parts)]
    return [o[:, :real_length] if o.ndim > 2 else o for o in outs]     # [n, L, D] back to the real L


def head_outputs(split, embeddings, context, xla=None, batch_size=None):
    """The head's outputs [B,C] for embeddings [B,L,D] (numpy) and its context."""
    if not split.own:
        return np.asarray(outputs_fn(split)(tf.constant(embeddings), context))
    length = bucket_length(embeddings.shape[1])
    return run_static(static_outputs_fn(split, use_xla(split, xla)), [embeddings, np.asarray(context)],
                      length, chunk_cap(length, embeddings.shape[2], batch_size))[0]


def target_gradient_fn(split):
    """A tf.function (embeddings [N,L,D], context [N,...], target [N]) -> (dF_t/dx [N,L,D], F_t [N]).

    One trace serves every batch size and length (input_signature with None dims), so
    callers can stream chunks of any size through it without retracing.
    """
    split = as_split(split) if not isinstance(split, Split) else split

    def build(split):
        head = split.head

        return tf.function(gradient_of_target(head), input_signature=[
            tf.TensorSpec([None, None, None], tf.float32), split.context_spec, tf.TensorSpec([None], tf.int32)],
            reduce_retracing=True)

    return traced(split, "target_gradient", build)


def outputs_fn(split):
    """A tf.function (embeddings, context) -> the head's outputs [N,C]."""
    def build(split):
        return tf.function(split.head, input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                                        split.context_spec], reduce_retracing=True)
    return traced(split, "outputs", build)


def gradients(model, inputs, target=None, *, layer=None, times_input=True, reduce=None, vocabulary=None, xla=None):
    """Gradient attributions at the Embedding layer's output.

    model: a model from model.py, any Keras 3 model with an Embedding layer fed by the token
        ids (layer=None finds it; layer="name" or the layer object chooses), or a Split.
    inputs: int token ids [B,L] (or [L]), or a list of strings for a model with a
        TextVectorization layer inside.
    times_input=True:  signed gradient x input, score_i = sum_d x_id * dF_t/dx_id.
    times_input=False: saliency, score_i = ||dF_t/dx_i||_2 (unsigned, as in Simonyan et al.).
    reduce: "sum" or "l2" over the embedding axis; default "sum" with times_input, else "l2".
    target: class to explain (default: the predicted class), an int or one per sample.
    vocabulary: id -> token list for Attribution.tokens (default: the model's TextVectorization's).
    xla: jit_compile model.py's models' graphs (default XLA, i.e. on unless TIG_XLA=0).
    """
    split = as_split(model, inputs, layer)
    embeddings, context, token_ids = split.lookup(inputs)
    probs = head_outputs(split, embeddings, context, xla)
    target = resolve_target(target, probs)
    if split.own:
        length = bucket_length(embeddings.shape[1])
        grads, output = run_static(static_gradient_fn(split, use_xla(split, xla)),
                                   [embeddings, np.asarray(context), target], length,
                                   chunk_cap(length, embeddings.shape[2]))
    else:
        grads, output = (t.numpy() for t in target_gradient_fn(split)(tf.constant(embeddings), context,
                                                                     tf.constant(target)))
    mask = token_ids != 0
    if reduce is None:
        reduce = "sum" if times_input else "l2"
    contributions = grads * embeddings if times_input else grads
    return Attribution(scores=reduce_scores(contributions, mask, reduce), target=target, probs=probs,
                       token_ids=token_ids, method="gradxinput" if times_input else "saliency",
                       output=output, tokens=tokens_of(token_ids, vocabulary or split.vocabulary),
                       output_kind=split.output_kind, layer=getattr(split.layer, "name", None))
