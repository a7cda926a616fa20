"""Integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365) per token, exact and batched.

For a model F split at its Embedding layer, input embeddings x [L,D] (the layer's output),
baseline x' and target t:

    IG_i = sum_d (x_id - x'_id) * integral_0^1 dF_t(x' + a (x - x')) / dx_id  da
         ~ sum_d (x_id - x'_id) * sum_k w_k * dF_t(x' + a_k (x - x')) / dx_id

with nodes a_k and weights w_k of a quadrature rule. Completeness: sum_i IG_i = F_t(x) -
F_t(x'); the gap `delta` = (F_t(x) - F_t(x')) - sum_i IG_i is reported per sample.

Non-intrusive: only model.split_at_embedding is used (model.py's own split, or the
interception of embedding_split.py for any other Keras 3 model), so every architecture
works; no weight is modified. PAD (id 0) positions, masked or not, keep their own embedding
along the whole path (x'_i = x_i), so their score is exactly 0.0. All samples x all nodes
stream through one graph in chunks of at most `batch_size` interpolated inputs, so memory stays
flat as `steps` grows.

Execution (gradients.py, "execution"): graphs traced per length, chunks of at most a fixed number
of rows, for every model; model.py's (padding-invariant) models run each text at the bucket of its
own length and use XLA for lengths that run often; other models run at their exact length, without XLA.
"""
import numpy as np
import tensorflow as tf

from cli import UserError
from embedding_split import verify_split
from gradients import (COMPLETENESS_TOLERANCE, Attribution, as_split, chunk_cap, chunks, function_for,
                       gradient_of_target, group_uses_xla, head_outputs, length_groups, pad_rows, reduce_scores,
                       resolve_target, tokens_of)
from tokenizer import MASK_ID, PAD_ID, UNK_ID

METHODS = ("gausslegendre", "left", "right", "middle", "trapezoid")
BASELINES = ("zero", "pad", "unk", "mask")
DEFAULT_BASELINE = "zero"
AUTO_STEPS = (16, 32, 64, 128, 256, 512)     # schedule of steps="auto"
AUTO_TOLERANCE = COMPLETENESS_TOLERANCE      # steps="auto" stops where Attribution.complete() holds
MAX_STEPS = 1024                             # quadrature nodes; Gauss-Legendre's set-up grows as steps^2


def quadrature(method, steps):
    """Nodes a_k in [0,1] and weights w_k (summing to 1) of an n-point rule on [0, 1]."""
    low = 2 if method == "trapezoid" else 1
    if not low <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between {low} and {MAX_STEPS} for {method}, got {steps}")
    n = int(steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    if method == "left":
        return np.arange(n) / n, np.full(n, 1 / n)
    if method == "right":
        return np.arange(1, n + 1) / n, np.full(n, 1 / n)
    if method == "middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1 / n)
    if method == "trapezoid":
        weights = np.full(n, 1 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, n), weights
    raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def make_baseline(split, token_ids, embeddings, baseline):
    """Baseline embeddings x' [B,L,D]; PAD positions keep their own embedding (x' = x there).

    zero: the zero vector at every position (default: the model's own "nothing here" for
          model.py's models, because PAD embeddings are zeroed; it needs no trained token, and
          evaluate.py found it the most faithful baseline, or within 0.004 AOPC of it, on every data set).
    pad:  the model's embedding of PAD (id 0) at every position (zero for model.py's models).
    unk:  the UNK (id 1) embedding at every real position.
    mask: the MASK (id 2) embedding at every real position (model.py's models trained with --mask-rate > 0).
    An array broadcastable to [B,L,D] is used as given (except at PAD).
    """
    if not isinstance(baseline, str):
        x0 = np.broadcast_to(np.asarray(baseline, np.float32), embeddings.shape).copy()
    elif baseline == "zero":
        x0 = np.zeros_like(embeddings)
    else:
        fill = {"pad": PAD_ID, "unk": UNK_ID, "mask": MASK_ID}.get(baseline)
        if fill is None:
            raise ValueError(f"unknown baseline {baseline!r}; choose one of: {', '.join(BASELINES)} or an array")
        if baseline == "mask" and not split.own:
            raise UserError("baseline 'mask' needs a model trained by train.py --mask-rate; use zero, pad or unk")
        x0 = np.asarray(split.embed_ids(np.where(token_ids != PAD_ID, fill, PAD_ID).astype(np.int32)), np.float32)
    return np.where(np.isin(token_ids, split.fixed_ids)[..., None], embeddings, x0).astype(np.float32)


def integrated_chunk(split):
    """The body of the integration graphs (gradients.function_for): for `slots` texts
    x, x0 [K,L,D], context [K,...], target [K] and C (text, node) pairs given by slot [C], nodes
    a_k [C] and weights w_k [C] (0 for padding pairs), sum_k w_k dF_t(x'+a_k(x-x'))/dx per text
    [K,L,D]. The gathers, the path and the per-text sums are fused into the same graph."""
    gradient = gradient_of_target(split)

    def fn(x, x0, context, target, slot, nodes, weights):
        x, x0 = tf.gather(x, slot), tf.gather(x0, slot)
        grads, _ = gradient(x0 + nodes[:, None, None] * (x - x0), tf.gather(context, slot), tf.gather(target, slot))
        return tf.math.unsorted_segment_sum(weights[:, None, None] * grads, slot, tf.shape(target)[0])
    return fn


def slots_for(rows, steps):
    """XLA: texts one chunk of `rows` (text, node) pairs can touch (sample-major), rounded up to a
    power of two so few shapes are compiled: (rows - 1) // steps + 2 at most."""
    return 1 << ((rows - 1) // steps + 1).bit_length()


def integrate_path(split, x, x0, context, target, nodes, weights, batch_size=None, xla=None):
    """sum_k w_k dF_t(x'+a_k(x-x'))/dx [B,L,D]. Per length group (gradients.length_groups) the
    B x S (text, node) pairs, sample-major, stream through one graph in chunks of a fixed
    number of pairs; memory stays flat in S."""
    batch, length, dim = x.shape
    steps = len(nodes)
    nodes, weights = nodes.astype(np.float32), weights.astype(np.float32)
    total = np.zeros_like(x)
    for run_length, rows, group in length_groups(split, context, [x, x0, np.asarray(context), target], 3):
        keep, pairs, cap = min(length, run_length), len(rows) * steps, chunk_cap(run_length, dim, batch_size)
        jit = group_uses_xla(split, "path", run_length, cap, pairs, xla)
        for start, size, padded in chunks(pairs, cap, pad=jit):
            pair = np.arange(start, start + padded)
            first = start // steps
            # the texts this chunk touches; with XLA a power of two of them (padded with copies)
            slots = slots_for(padded, steps) if jit else (start + size - 1) // steps - first + 1
            slot = np.minimum(pair // steps - first, slots - 1).astype(np.int32)
            pair_weights = np.where(np.arange(padded) < size, weights[pair % steps], 0).astype(np.float32)
            args = [tf.constant(pad_rows(a[first:first + slots], slots)) for a in group] + [
                tf.constant(slot), tf.constant(nodes[pair % steps]), tf.constant(pair_weights)]
            out = function_for(split, "path", integrated_chunk, args, jit)(*args).numpy()
            texts = min(slots, len(rows) - first)
            total[rows[first:first + texts], :keep] += out[:texts, :keep]
    return total


def integrated_gradients(model, inputs, target=None, *, layer=None, baseline=DEFAULT_BASELINE, steps=50,
                         method="gausslegendre", batch_size=None, tolerance=None, reduce="sum", vocabulary=None,
                         xla=None):
    """Integrated gradients of class `target` for each token of each text.

    model: a model from model.py, any Keras 3 model (Sequential, functional, subclassed, nested)
        whose input reaches an Embedding layer, an (embed, head) pair, or a Split.
    inputs: int token ids [B,L] (or [L]); or a list of strings for a model with a
        TextVectorization layer inside. PAD=0 positions get exactly 0.0.
    layer: the Embedding layer to attribute at (name or layer object); None finds the one the
        token ids feed, and refuses (listing the candidates) when that is ambiguous.
    target: class to explain, default the predicted class; an int or one per sample.
        A single sigmoid unit p is two classes [1 - p, p]; see Attribution.output_kind.
    baseline: "zero" (default), "pad", "unk", "mask", or an array broadcastable to [B,L,D].
    steps: number of quadrature nodes, or "auto": double from 16 up to 512 per sample until
        |delta| <= tolerance * |F(x) - F(x')| (tolerance default 0.01); also when tolerance is set.
    method: "gausslegendre" (default: far smaller completeness error for the same steps),
        or the Riemann rules "left", "right", "middle", "trapezoid".
    batch_size: at most this many interpolated inputs per forward/backward pass
        (default: gradients.CHUNK_ROWS = 128, fewer for texts whose chunk would exceed 32 MB).
    reduce: "sum" over the embedding axis (signed, sums to F(x) - F(x')) or "l2" (unsigned
        norm per token, the original project's view; completeness does not hold for it).
    vocabulary: id -> token list for Attribution.tokens (default: the model's TextVectorization's).
    xla: True/False: jit_compile model.py's models' graphs or not; None (default): TIG_XLA if set,
        else XLA for a length once it has run gradients.XLA_AFTER_CALLS chunks. Other models never
        use XLA. All models run on graphs traced per length (see gradients.py, "execution").
    Returns an Attribution with scores [B,L], target, probs, delta, steps, output, baseline_output, tokens.
    """
    import validate
    validate.check_ig(model, steps, tolerance, baseline, batch_size, method, reduce)
    split = as_split(model, inputs, layer)
    validate.check_split_inputs(split, inputs)
    x, context, token_ids = split.lookup(inputs)
    probs = head_outputs(split, x, context, xla)
    verify_split(split, inputs, probs)
    target = resolve_target(target, probs)
    x0 = make_baseline(split, token_ids, x, baseline)
    if x0.shape != x.shape:
        raise ValueError(f"baseline has shape {x0.shape}, expected {x.shape}")
    f_x = probs[np.arange(len(target)), target]
    f_x0 = head_outputs(split, x0, context, xla)[np.arange(len(target)), target]
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1 interpolated input, got {batch_size}")
    context = np.asarray(context)

    adaptive = steps == "auto" or tolerance is not None
    if steps == "auto":
        schedule = AUTO_STEPS
    elif adaptive:   # tolerance with a number: escalate through the schedule, at most `steps`
        schedule = tuple(s for s in AUTO_STEPS if s < int(steps)) + (int(steps),)
    else:
        schedule = (int(steps),)
    tolerance = AUTO_TOLERANCE if tolerance is None else tolerance
    contributions = np.zeros_like(x)
    steps_used = np.zeros(len(target), np.int32)
    todo = np.arange(len(target))
    for n in schedule:
        nodes, weights = quadrature(method, n)
        grads = integrate_path(split, x[todo], x0[todo], context[todo], target[todo], nodes, weights, batch_size, xla)
        contributions[todo] = (x[todo] - x0[todo]) * grads
        steps_used[todo] = n
        if not adaptive:
            break
        gap = np.abs((f_x[todo] - f_x0[todo]) - contributions[todo].sum((1, 2)))
        todo = todo[gap > np.maximum(tolerance * np.abs(f_x[todo] - f_x0[todo]), 1e-7)]
        if len(todo) == 0:
            break

    delta = (f_x - f_x0) - contributions.sum((1, 2))
    return Attribution(scores=reduce_scores(contributions, ~np.isin(token_ids, split.fixed_ids), reduce), target=target, probs=probs,
                       token_ids=token_ids, method="ig", delta=delta.astype(np.float32), steps=steps_used,
                       baseline=baseline if isinstance(baseline, str) else "array",
                       output=f_x, baseline_output=f_x0, tokens=tokens_of(token_ids, vocabulary or split.vocabulary),
                       output_kind=split.output_kind, layer=getattr(split.layer, "name", None))
