"""Vanilla gradients per token (saliency and gradient x input), and the shared `Attribution`.

For a model F (class probabilities) split at its embedding, x = embed(token_ids) [B,L,D]
and target class t:

    saliency:          score_i = || dF_t/dx_i ||_2             (unsigned; times_input=False)
    gradient x input:  score_i = sum_d x_id * dF_t/dx_id        (signed;   times_input=True)

Scores are exactly 0.0 at PAD positions: models from model.py zero PAD embeddings inside
the head, so their gradient there is exactly zero, and scores are masked as well.
"""
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model import split_at_embedding

REDUCTIONS = ("sum", "l2")
COMPLETENESS_TOLERANCE = 0.01   # an IG explanation is "complete" when |delta| <= 1% of |F(x) - F(x')|


@dataclass
class Attribution:
    """Per-token scores for a batch. scores [B,L] (0.0 at PAD), target [B], probs [B,C]."""
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

    def complete(self, tolerance=COMPLETENESS_TOLERANCE):
        """IG only: per text, whether |delta| <= tolerance * |F(x) - F(x')|."""
        return np.abs(self.delta) <= tolerance * np.abs(self.output - self.baseline_output)


def as_embed_head(model):
    """(embed, head) from a model built by model.py, or an (embed, head) pair as given."""
    if isinstance(model, tuple) and len(model) == 2:
        return model
    return split_at_embedding(model)


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


_TRACED = {}   # (head model, kind) -> tf.function, kept for the life of the process


def traced(head, kind, build):
    """The tf.function `build(head)`, made once per head and kind. split_at_embedding makes new
    closures on every call, so the key is the Keras head they wrap (`.layer`); any other
    callable is its own key."""
    key = (getattr(head, "layer", head), kind)
    if key not in _TRACED:
        _TRACED[key] = build(head)
    return _TRACED[key]


def target_gradient_fn(head):
    """A tf.function (embeddings [N,L,D], mask [N,L], target [N]) -> (dF_t/dx [N,L,D], F_t [N]).

    One trace serves every batch size and length (input_signature with None dims), so
    callers can stream chunks of any size through it without retracing.
    """
    def build(head):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                      tf.TensorSpec([None, None], tf.bool),
                                      tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        def fn(embeddings, mask, target):
            with tf.GradientTape() as tape:
                tape.watch(embeddings)
                selected = tf.gather(head(embeddings, mask), target, axis=1, batch_dims=1)
            # samples are independent, so the gradient of the sum is each sample's own gradient
            return tape.gradient(selected, embeddings), selected
        return fn

    return traced(head, "target_gradient", build)


def gradients(model, token_ids, target=None, *, times_input=True, reduce=None):
    """Gradient attributions at the input embedding.

    times_input=True:  signed gradient x input, score_i = sum_d x_id * dF_t/dx_id.
    times_input=False: saliency, score_i = ||dF_t/dx_i||_2 (unsigned, as in Simonyan et al.).
    reduce: "sum" or "l2" over the embedding axis; default "sum" with times_input, else "l2".
    target: class to explain (default: the predicted class), an int or one per sample.
    """
    embed, head = as_embed_head(model)
    token_ids = prepare_ids(token_ids)
    embeddings, mask = embed(tf.constant(token_ids))
    embeddings = tf.cast(embeddings, tf.float32)
    probs = np.asarray(head(embeddings, mask))
    target = resolve_target(target, probs)
    grads, output = target_gradient_fn(head)(embeddings, mask, tf.constant(target))
    grads, embeddings, mask = grads.numpy(), embeddings.numpy(), np.asarray(mask)
    if reduce is None:
        reduce = "sum" if times_input else "l2"
    contributions = grads * embeddings if times_input else grads
    return Attribution(scores=reduce_scores(contributions, mask, reduce), target=target, probs=probs,
                       token_ids=token_ids, method="gradxinput" if times_input else "saliency",
                       output=output.numpy())
