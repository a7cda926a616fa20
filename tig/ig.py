"""Integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365) per token, exact and batched.

For a model F split at its Embedding layer, input embeddings x [L,D] (the layer's output),
baseline x' and target t:

    IG_i = sum_d (x_id - x'_id) * integral_0^1 dF_t(x' + a (x - x')) / dx_id  da
         ~ sum_d (x_id - x'_id) * sum_k w_k * dF_t(x' + a_k (x - x')) / dx_id

with nodes a_k and weights w_k of a quadrature rule. Completeness: sum_i IG_i = F_t(x) -
F_t(x'); the gap `delta` = (F_t(x) - F_t(x')) - sum_i IG_i is reported per sample.

Non-intrusive: the model is split at its embedding (tig/embedding_split.py: tig/model.py's own split,
or interception for any other Keras 3 model), so every architecture works; no weight is
modified, and every call checks that the split computes the model's own outputs. PAD (id 0) positions, masked or not, keep their own embedding
along the whole path (x'_i = x_i), so their score is exactly 0.0. All samples x all nodes
stream through one graph in chunks of at most `internal_batch_size` interpolated inputs, so memory
stays flat as `steps` grows.

`integrate` is the integral alone, over a gradient function and the quadrature's nodes; how the
gradients are computed (length buckets, chunks, XLA) is tig/engine.py's job.
"""
import numpy as np

from tig import validate
from tig.attribution import COMPLETENESS_TOLERANCE, attribution_of, embedded_batch, reduce_scores
from tig.deletion import explained_mask
from tig.engine import ENGINE
from tig.errors import UserError
from tig.tokenizer import MASK_ID, PAD_ID, UNK_ID
from tig.defaults import STEPS
from tig.validate import BASELINES, MAX_STEPS  # noqa: F401  (the API's names: integrated_gradients.BASELINES)

RULES = ("gausslegendre", "left", "right", "middle", "trapezoid")   # quadrature rules (`rule`)
DEFAULT_BASELINE = "zero"
AUTO_STEPS = (16, 32, 64, 128, 256, 512)     # schedule of steps="auto"
AUTO_TOLERANCE = COMPLETENESS_TOLERANCE      # steps="auto" stops where Attribution.complete() holds


def quadrature(rule, steps):
    """Nodes a_k in [0,1] and weights w_k (summing to 1) of an n-point rule on [0, 1]."""
    low = 2 if rule == "trapezoid" else 1
    if not low <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between {low} and {MAX_STEPS} for {rule}, got {steps}")
    n = int(steps)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    if rule == "left":
        return np.arange(n) / n, np.full(n, 1 / n)
    if rule == "right":
        return np.arange(1, n + 1) / n, np.full(n, 1 / n)
    if rule == "middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1 / n)
    if rule == "trapezoid":
        weights = np.full(n, 1 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, n), weights
    raise ValueError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")


def make_baseline(split, token_ids, embeddings, baseline):
    """Baseline embeddings x' [B,L,D]; PAD positions keep their own embedding (x' = x there).

    zero: the zero vector at every position (default: the model's own "nothing here" for
          tig/model.py's models, because PAD embeddings are zeroed; it needs no trained token, and
          evaluate.py found it the most faithful baseline, or within 0.004 AOPC of it, on every data set).
    pad:  the model's embedding of PAD (id 0) at every position (zero for tig/model.py's models).
    unk:  the UNK (id 1) embedding at every real position.
    mask: the MASK (id 2) embedding at every real position (tig/model.py's models trained with --mask-rate > 0).
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
        if baseline == "mask" and not split.padding_invariant:
            raise UserError("baseline 'mask' needs a model trained by train.py --mask-rate; use zero, pad or unk")
        x0 = np.asarray(split.embed_ids(np.where(token_ids != PAD_ID, fill, PAD_ID).astype(np.int32)), np.float32)
    return np.where(np.isin(token_ids, split.fixed_ids)[..., None], embeddings, x0).astype(np.float32)


def integrate(gradient_sum, x, x0, nodes, weights):
    """The integral itself, for quadrature nodes a_k and weights w_k:

        IG = (x - x') * sum_k w_k dF/dx (x' + a_k (x - x'))

    gradient_sum(x, x0, nodes, weights) -> sum_k w_k dF/dx (x0 + a_k (x - x0)), shaped like x: the
    engine's fused graphs (engine.Engine.path_gradient), or weighted_gradient_sum(gradient) for
    any gradient function. Pure: nothing else runs here (tests check it on analytic functions)."""
    return (x - x0) * gradient_sum(x, x0, nodes, weights)


def weighted_gradient_sum(gradient):
    """gradient_sum for a plain gradient function gradient(points) -> dF/dx at points: one call per node."""
    def gradient_sum(x, x0, nodes, weights):
        return sum(w * gradient(x0 + a * (x - x0)) for a, w in zip(nodes, weights))
    return gradient_sum


def integrated_gradients(model, inputs, target=None, *, layer=None, baseline=DEFAULT_BASELINE, steps=STEPS,
                         rule="gausslegendre", internal_batch_size=None, tolerance=None, reduce="sum",
                         vocabulary=None, xla=None):
    """Integrated gradients of class `target` for each token of each text.

    model: a model from tig/model.py, any Keras 3 model (Sequential, functional, subclassed, nested)
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
    rule: the quadrature rule, "gausslegendre" (default: far smaller completeness error for the same steps),
        or the Riemann rules "left", "right", "middle", "trapezoid".
    internal_batch_size: at most this many interpolated inputs per forward/backward pass
        (default: engine.CHUNK_ROWS = 128, fewer for texts whose chunk would exceed 32 MB).
    reduce: "sum" over the embedding axis (signed, sums to F(x) - F(x')) or "l2" (unsigned
        norm per token, the original project's view; completeness does not hold for it).
    vocabulary: id -> token list for Attribution.tokens (default: the model's TextVectorization's).
    xla: True/False: jit_compile tig/model.py's models' graphs (and KerasHub tasks' on ids) or not;
        None (default): $TIG_XLA=1/0 if set, else no XLA. Decided by this call alone, never by the
        calls before it. Other models never use XLA. All models run on graphs traced per length
        (tig/engine.py, which also says why XLA is off by default).
    Returns an Attribution with scores [B,L], target, probs, delta, steps, output, baseline_output, tokens.
    """
    validate.check_ig(model, steps, tolerance, baseline, internal_batch_size, reduce)
    validate.check_choice(rule, RULES, "rule")
    split, x, context, token_ids, probs, target = embedded_batch(model, inputs, target, layer, xla)
    x0 = make_baseline(split, token_ids, x, baseline)
    if x0.shape != x.shape:
        raise ValueError(f"baseline has shape {x0.shape}, expected {x.shape}")
    f_x = probs[np.arange(len(target)), target]
    f_x0 = ENGINE.outputs(split, x0, context, xla)[np.arange(len(target)), target]
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
        nodes, weights = quadrature(rule, n)

        def gradient_sum(x, x0, nodes, weights, rows=todo):
            return ENGINE.path_gradient(split, x, x0, context[rows], target[rows], nodes, weights,
                                        internal_batch_size, xla)
        contributions[todo] = integrate(gradient_sum, x[todo], x0[todo], nodes, weights)
        steps_used[todo] = n
        if not adaptive:
            break
        gap = np.abs((f_x[todo] - f_x0[todo]) - contributions[todo].sum((1, 2)))
        todo = todo[gap > np.maximum(tolerance * np.abs(f_x[todo] - f_x0[todo]), 1e-7)]
        if len(todo) == 0:
            break

    delta = (f_x - f_x0) - contributions.sum((1, 2))
    scores = reduce_scores(contributions, explained_mask(token_ids, split.fixed_ids), reduce)
    return attribution_of(split, token_ids, scores, "ig", vocabulary, target=target, probs=probs,
                          delta=delta.astype(np.float32), steps=steps_used,
                          baseline=baseline if isinstance(baseline, str) else "array", output=f_x, baseline_output=f_x0)
