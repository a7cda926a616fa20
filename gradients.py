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
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from cli import UserError
from embedding_split import Split, model_scores, verify_split
from model import split_at_embedding
from tokenizer import PAD_ID

REDUCTIONS = ("sum", "l2")
COMPLETENESS_TOLERANCE = 0.01   # an IG explanation is "complete" when |delta| <= 1% of |F(x) - F(x')|
# rows (interpolated inputs) per forward/backward chunk: IG 64 texts x 50 steps with XLA measured
# fastest near 128 rows on the hotel, weibo and THUCNews char-CNNs (bench.py's chunk sizes 64..2048,
# one run each); long texts are capped at FLOATS_PER_CHUNK embedding floats (32 MB) per chunk
CHUNK_ROWS = 128
FLOATS_PER_CHUNK = 1 << 23


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

    def show(self, names=None, classes=None):
        """For notebooks: the texts as coloured characters with class names, the CJK font embedded.
        names: a checkpoint (its tokenizer and classes: `ig.show(ckpt)`), a tokenizer or a vocabulary
        list; classes: class names. Without names, the tokens the Attribution knows are shown."""
        from render import attribution_explanations
        return attribution_explanations(self, names, classes)


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
    split = split_at_embedding(model, layer, inputs)
    if split.own and split.reference is None and hasattr(model, "get_layer"):   # model.py's: ids -> softmax
        split = replace(split, reference=lambda inputs: model_scores(model, tf.constant(prepare_ids(inputs)), "softmax"))
    return split




def tokens_of(token_ids, vocabulary):
    """Per row, the vocabulary entry at each position up to the last non-PAD one."""
    if vocabulary is None:
        return None
    out = []
    for row in np.asarray(token_ids):
        real = np.flatnonzero(row != PAD_ID)
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
    from validate import check_target
    check_target(target, classes)
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


# --- execution: static lengths, chunks, XLA -----------------------------------------
#
# A graph traced with a None length runs 1.3-1.6x slower on CPU than one traced on the length (and
# XLA needs every shape); leaving the number of rows open costs 2-6% (bench.py's floors "rows open"
# and "static shapes"; RESULTS.md) and saves padding every length group's last chunk and a trace per
# chunk size. So every model runs on graphs traced per length, with the number of rows left open,
# streamed in chunks of at most a fixed number of rows:
#   - model.py's models are padding-invariant (PAD columns with mask False change nothing:
#     tests/test_attributions.py), so each text runs at the bucket of its own real length
#     (16, 24, 32, 48, 64, 96, ...: at most 1.5x the text, whatever the batch's padded length),
#     which also skips the PAD columns a maxlen-padded batch carries: one trace per (kind, bucket);
#   - other models keep the exact length they are given (their padding invariance is unknown),
#     one trace per length for up to EXACT_LENGTHS_PER_MODEL lengths, then one None-dim graph.
# XLA (jit_compile) is for model.py's models only (others may hold string ops, which have no XLA
# kernels) and compiles every shape, so its chunks have two sizes: a length group's last chunk is
# padded (copies of a real row, outputs discarded) to cap // LAST_CHUNK_DIVISOR rows or to cap.
# Compiling one shape takes 1.6-2.1 s on this project's CPU machine, while XLA saves about 0.012 s per
# 128-row chunk of IG (hotel char-CNN, bench.py: 1.16 s vs 1.47 s for 25 chunks): a length's two
# compilations pay back after about 300 chunks. So by default only IG's integration graphs ("path",
# where the time goes) are compiled, and a length only once it has run XLA_AFTER_CALLS chunks without
# (by then it has lost about what compiling costs, so it never loses more than twice that): one-off
# explanations and evaluations never pay for a compilation, long jobs (explain.py over a corpus) run
# their hot lengths on XLA. Measured on a whole `evaluate.py -n 200` (hotel; RESULTS.md): 72.5 s
# before static lengths; now 33.8 s without XLA, 38.1 s with XLA after 64 chunks, 57.5 s with XLA for
# every shape. TIG_XLA=1 compiles every shape of every kind at once, TIG_XLA=0 never; xla=True/False
# does the same per call.

XLA_AFTER_CALLS = 256
XLA_KINDS = ("path",)        # kinds compiled by the default rule
EXACT_LENGTHS_PER_MODEL = 8
LAST_CHUNK_DIVISOR = 8         # XLA: a last chunk is padded to cap // 8 rows or to cap: two sizes per length


def xla_from_env(value=None):
    """$TIG_XLA: "1" True, "0" False, unset or empty None (by XLA_AFTER_CALLS); anything else an error."""
    value = os.environ.get("TIG_XLA", "") if value is None else value
    if value.strip() not in ("", "0", "1"):
        raise UserError(f"$TIG_XLA must be 0, 1 or unset, got {value[:40]!r}")
    return {"0": False, "1": True}.get(value.strip())


XLA = xla_from_env()     # None: by XLA_AFTER_CALLS


def bucket_length(length):
    """The smallest of 16, 24, 32, 48, 64, 96, ... (2^k and 1.5 * 2^k) that holds `length`."""
    bucket = 16
    while bucket < length:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


def length_groups(split, context, arrays, with_length):
    """Yields (run length, row indices, arrays taken at those rows). model.py's models: rows
    grouped by the bucket of their real length (up to the last non-PAD position of the PAD mask
    `context`), the first `with_length` arrays ([n, L, ...]) fitted to it (fit_length); other
    models (and none_dim_graphs): one group of every row at the given length L."""
    rows = np.arange(len(context))
    if not split.own:
        yield arrays[0].shape[1], rows, list(arrays)
        return
    mask = np.asarray(context)
    real = np.where(mask.any(1), mask.shape[1] - np.argmax(mask[:, ::-1], axis=1), 1)
    buckets = np.array([bucket_length(n) for n in real])
    for bucket in np.unique(buckets):
        rows = np.flatnonzero(buckets == bucket)
        yield int(bucket), rows, [fit_length(a[rows], bucket) if i < with_length else a[rows]
                                  for i, a in enumerate(arrays)]


def fit_length(array, length):
    """array [n, l, ...] -> [n, length, ...]: zeros (PAD, mask False, zero embedding) appended,
    or trailing columns cut (only ever PAD columns: see length_groups)."""
    if array.shape[1] >= length:
        return array[:, :length]
    pad = [(0, 0), (0, length - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad)


def chunk_cap(length, dim, batch_size=None):
    """Rows per chunk: batch_size if given, else CHUNK_ROWS within FLOATS_PER_CHUNK."""
    return max(1, int(batch_size) if batch_size else min(CHUNK_ROWS, FLOATS_PER_CHUNK // (length * dim)))


def chunks(total, cap, pad=False):
    """(start, size, rows to run) covering range(total) in chunks of `cap` rows. With pad (XLA,
    which compiles every shape) the last one runs padded to cap // LAST_CHUNK_DIVISOR rows if it
    fits there, else to cap: two sizes per length."""
    small = max(1, cap // LAST_CHUNK_DIVISOR)
    for start in range(0, total, cap):
        size = min(cap, total - start)
        yield start, size, size if not pad else small if size <= small else cap


def pad_rows(array, rows):
    """array [n, ...] -> [rows, ...], repeating the last row (real data, discarded afterwards)."""
    if len(array) == rows:
        return array
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def none_dim_graphs(split):
    """The same split run on one None-dim graph per kind, at the given lengths, without XLA: the
    path every model took before static shapes (bench.py's "before", tests' reference)."""
    return replace(split, own=False, none_dims=True, key=("none dims", split.key))


_TRACED = {}     # (split key, (kind, "static" or "none dims", xla)) -> tf.function, for the process's life
_CONCRETE = {}   # (that key, input shapes) -> its concrete function (called directly: less dispatch)
_CALLS = Counter()             # (split key, kind, length, cap) -> chunks run, for XLA_AFTER_CALLS
_LENGTHS = {}                  # (split key, kind) -> exact lengths traced (other models)


def traced(split, kind, build):
    """The tf.function `build(split)`, made once per split key and kind. Splits are cheap
    objects made on every call; the key is the Keras model (part) they wrap."""
    key = (split.key if isinstance(split, Split) else getattr(split, "layer", split), kind)
    if key not in _TRACED:
        _TRACED[key] = build(split)
    return _TRACED[key]


def traces():
    """Graphs traced so far in this process, over every model and kind (evaluate.py reports it)."""
    return sum(fn.experimental_get_tracing_count() for fn in _TRACED.values())


def use_xla(split, xla=None, calls=None, kind="path"):
    """The XLA rule: never for other models; else xla if given, TIG_XLA if set, else whether this
    is an XLA_KINDS graph whose length has already run XLA_AFTER_CALLS chunks (`calls`)."""
    if not split.own:
        return False
    choice = XLA if xla is None else xla
    if choice is not None:
        return bool(choice)
    return kind in XLA_KINDS and (calls or 0) > XLA_AFTER_CALLS


def group_uses_xla(split, kind, length, cap, rows, xla=None):
    """use_xla for a length group about to run `rows` rows in chunks of at most `cap`."""
    _CALLS[split.key, kind, length, cap] += -(-rows // cap)
    return use_xla(split, xla, _CALLS[split.key, kind, length, cap], kind)


def function_for(split, kind, body, args, jit=False):
    """The concrete function that runs body(split)(*args): traced on these args' shapes with
    the number of rows open, on their exact shapes with XLA (jit, which use_xla gives only to
    model.py's models), or on None dims (none_dims, or another model past its
    EXACT_LENGTHS_PER_MODEL lengths; never jit: neither is model.py's own)."""
    none_dims = split.none_dims or (not split.own and _over_length_budget(split, kind, args[0].shape[1]))
    fn = traced(split, (kind, "none dims" if none_dims else "static", jit),
                lambda split: tf.function(body(split), jit_compile=jit))
    shapes = tuple(tuple([None] * len(a.shape) if none_dims else a.shape if jit else [None, *a.shape[1:]])
                   for a in args)
    key = (id(fn), shapes, tuple(a.dtype for a in args))
    if key not in _CONCRETE:
        _CONCRETE[key] = fn.get_concrete_function(*[tf.TensorSpec(s, a.dtype) for s, a in zip(shapes, args)])
    return _CONCRETE[key]


def _over_length_budget(split, kind, length):
    lengths = _LENGTHS.setdefault((split.key, kind), set())
    if length not in lengths and len(lengths) >= EXACT_LENGTHS_PER_MODEL:
        return True
    lengths.add(length)
    return False


def run_static(split, kind, body, arrays, xla=None, batch_size=None):
    """body(split)(*arrays) over rows, by length groups and chunks. arrays[0] is the
    embeddings [n,L,D], arrays[1] the context, then per-row arrays. Returns the outputs (numpy,
    each [n, ...]); [n, l, D] outputs are cut back to (or zero-padded to) the given L."""
    embeddings, context = arrays[0], np.asarray(arrays[1])
    n, length, dim = embeddings.shape
    pieces = []    # (row indices, outputs of their chunk)
    for run_length, rows, group in length_groups(split, context, [embeddings, context, *arrays[2:]], 2):
        cap = chunk_cap(run_length, dim, batch_size)
        jit = group_uses_xla(split, kind, run_length, cap, len(rows), xla)
        for start, size, padded in chunks(len(rows), cap, pad=jit):
            args = [tf.constant(pad_rows(a[start:start + size], padded)) for a in group]
            out = function_for(split, kind, body, args, jit)(*args)
            pieces.append((rows[start:start + size],
                           [np.asarray(o)[:size] for o in (out if isinstance(out, (tuple, list)) else (out,))]))
    return [gather_rows(n, length, [(rows, out[i]) for rows, out in pieces]) for i in range(len(pieces[0][1]))]


def gather_rows(n, length, pieces):
    """One [n, ...] array from (row indices, values) pieces; per-position values [rows, l, D]
    are fitted to `length` first (fit_length: cut, or zeros appended)."""
    if pieces[0][1].ndim > 2:
        pieces = [(rows, fit_length(values, length)) for rows, values in pieces]
    result = np.zeros((n,) + pieces[0][1].shape[1:], pieces[0][1].dtype)
    for rows, values in pieces:
        result[rows] = values
    return result


def gradient_of_target(split):
    """(embeddings, context, target) -> (dF_t/dx, F_t), the body of every gradient graph."""
    head = split.head

    def fn(embeddings, context, target):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            selected = tf.gather(head(embeddings, context), target, axis=1, batch_dims=1)
        # samples are independent, so the gradient of the sum is each sample's own gradient
        return tape.gradient(selected, embeddings), selected
    return fn


def head_of(split):
    return split.head


def head_outputs(split, embeddings, context, xla=None, batch_size=None):
    """The head's outputs [B,C] for embeddings [B,L,D] (numpy) and its context."""
    return run_static(split, "outputs", head_of, [embeddings, context], xla, batch_size)[0]


def class_scores(model, inputs, *, layer=None, xla=None, rows_per_call=1024):
    """Class scores [N,C] of any model this module explains (softmax probabilities, [1-p, p] for
    one sigmoid unit, or raw scores), on the same static-shape graphs as the explanations;
    inputs are embedded `rows_per_call` at a time so large perturbation sets stay small in memory."""
    split = as_split(model, inputs[:1] if len(inputs) else inputs, layer)
    parts = []
    for start in range(0, len(inputs), rows_per_call):
        embeddings, context, _ = split.lookup(inputs[start:start + rows_per_call])
        parts.append(head_outputs(split, embeddings, context, xla))
    return np.concatenate(parts)


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
    xla: True/False: jit_compile model.py's models' graphs or not; None (default): TIG_XLA if set,
        else no XLA (the default rule compiles only IG's integration graphs; see "execution").
    """
    import validate
    validate.check_model(model)
    split = as_split(model, inputs, layer)
    validate.check_split_inputs(split, inputs)
    embeddings, context, token_ids = split.lookup(inputs)
    probs = head_outputs(split, embeddings, context, xla)
    verify_split(split, inputs, probs)
    target = resolve_target(target, probs)
    grads, output = run_static(split, "gradient", gradient_of_target, [embeddings, context, target], xla)
    mask = ~np.isin(token_ids, split.fixed_ids)
    if reduce is None:
        reduce = "sum" if times_input else "l2"
    contributions = grads * embeddings if times_input else grads
    return Attribution(scores=reduce_scores(contributions, mask, reduce), target=target, probs=probs,
                       token_ids=token_ids, method="gradxinput" if times_input else "saliency",
                       output=output, tokens=tokens_of(token_ids, vocabulary or split.vocabulary),
                       output_kind=split.output_kind, layer=getattr(split.layer, "name", None))
