"""How explanations run: graphs traced per length, rows streamed in chunks, and the XLA choice.

Every method asks one question of a model split at its embedding (embedding_split.Split): the
head's outputs, or the gradient of a class score, for many rows of embeddings. The Engine answers
it fast and with flat memory:

  - graphs are traced per length, with the number of rows left open: a None length runs 1.3-1.6x
    slower on CPU, an open number of rows costs 2-6% (bench/bench_ig.py's floors) and saves padding;
  - padding-invariant splits (this project's models: PAD columns with mask False change nothing,
    tests/test_attributions.py) run each text at the bucket of its own real length (16, 24, 32,
    48, 64, 96, ...: at most 1.5x the text): one trace per (kind, bucket); other models keep the
    exact length they are given, one trace per length for up to `exact_lengths` lengths, then
    one None-dim graph;
  - rows stream in chunks of at most CHUNK_ROWS (fewer when a chunk would pass FLOATS_PER_CHUNK);
  - XLA (jit_compile) only for splits known to compile (tig/model.py's, KerasHub tasks on their
    ids; others may hold string ops), and only when the call asks for it: its xla=True/False, else
    the Engine's own xla (a constructor argument), else $TIG_XLA=1/0 (read when a call starts),
    else off: the same for every kind and length group, and never dependent on the calls before
    it. XLA compiles every shape, so its chunks have two sizes (a group's last chunk is padded
    with copies of a real row). Off by default: compiling a shape costs 1.6-2.1 s on this CPU and
    saves ~0.012 s per 128-row IG chunk, so it pays only past ~130-175 chunks of one shape, while
    the project's callers run 32-64 texts x 50 steps per call (at most 25 chunks, over several
    length buckets); XLA for every shape made a whole `evaluate.py -n 200` 1.7x slower
    (RESULTS.md). A long job over the same lengths can set TIG_XLA=1 (bench/bench_ig.py times both).

The Engine's caches (traced functions, their concrete functions, the exact lengths traced) are
held per Split in weak references: a model that is no longer used is freed with its graphs.
`ENGINE` is the one every explanation uses.
"""
import os
import weakref
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tig.errors import UserError

# rows (interpolated inputs) per forward/backward chunk: IG 64 texts x 50 steps with XLA measured
# fastest near 128 rows on the hotel, weibo and THUCNews char-CNNs (bench/bench_ig.py's chunk sizes 64..2048,
# one run each); long texts are capped at FLOATS_PER_CHUNK embedding floats (32 MB) per chunk
CHUNK_ROWS = 128
FLOATS_PER_CHUNK = 1 << 23
XLA_DEFAULT = False            # neither the call, the Engine nor $TIG_XLA chose: no XLA (see the top)
EXACT_LENGTHS_PER_MODEL = 8
LAST_CHUNK_DIVISOR = 8         # XLA: a last chunk is padded to cap // 8 rows or to cap: two sizes per length


def xla_from_env(value=None):
    """$TIG_XLA: "1" True, "0" False, unset or empty None (no choice); anything else an error."""
    value = os.environ.get("TIG_XLA", "") if value is None else value
    if value.strip() not in ("", "0", "1"):
        raise UserError(f"$TIG_XLA must be 0, 1 or unset, got {value[:40]!r}")
    return {"0": False, "1": True}.get(value.strip())


# --- the plan: length groups and chunks (pure NumPy; bench/bench_ig.py times exactly these) -----------

def bucket_length(length):
    """The smallest of 16, 24, 32, 48, 64, 96, ... (2^k and 1.5 * 2^k) that holds `length`."""
    bucket = 16
    while bucket < length:
        bucket = bucket * 3 // 2 if bucket & (bucket - 1) == 0 else bucket * 4 // 3
    return bucket


def length_groups(split, context, arrays, with_length):
    """Yields (run length, row indices, arrays taken at those rows). Padding-invariant splits:
    rows grouped by the bucket of their real length (up to the last non-PAD position of the PAD
    mask `context`), the first `with_length` arrays ([n, L, ...]) fitted to it (fit_length);
    other splits: one group of every row at the given length L."""
    rows = np.arange(len(context))
    if not split.padding_invariant:
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


def chunk_cap(length, dim, rows=None):
    """Rows per chunk: `rows` if given, else CHUNK_ROWS within FLOATS_PER_CHUNK."""
    return max(1, int(rows) if rows else min(CHUNK_ROWS, FLOATS_PER_CHUNK // (length * dim)))


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


def gather_rows(n, length, pieces):
    """One [n, ...] array from (row indices, values) pieces; per-position values [rows, l, D]
    are fitted to `length` first (fit_length: cut, or zeros appended)."""
    if pieces[0][1].ndim > 2:
        pieces = [(rows, fit_length(values, length)) for rows, values in pieces]
    result = np.zeros((n,) + pieces[0][1].shape[1:], pieces[0][1].dtype)
    for rows, values in pieces:
        result[rows] = values
    return result


def slots_for(rows, steps):
    """XLA: texts one chunk of `rows` (text, node) pairs can touch (sample-major), rounded up to a
    power of two so few shapes are compiled: (rows - 1) // steps + 2 at most."""
    return 1 << ((rows - 1) // steps + 1).bit_length()


# --- graph bodies: what runs inside the traced functions -----------------------------------

def head_of(split):
    return split.head


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


def path_gradient_sum(split):
    """The body of the integration graphs: for `slots` texts x, x0 [K,L,D], context [K,...],
    target [K] and C (text, node) pairs given by slot [C], nodes a_k [C] and weights w_k [C]
    (0 for padding pairs), sum_k w_k dF_t(x'+a_k(x-x'))/dx per text [K,L,D]. The gathers, the
    path and the per-text sums are fused into the same graph."""
    gradient = gradient_of_target(split)

    def fn(x, x0, context, target, slot, nodes, weights):
        x, x0 = tf.gather(x, slot), tf.gather(x0, slot)
        grads, _ = gradient(x0 + nodes[:, None, None] * (x - x0), tf.gather(context, slot), tf.gather(target, slot))
        return tf.math.unsorted_segment_sum(weights[:, None, None] * grads, slot, tf.shape(target)[0])
    return fn


# --- the engine --------------------------------------------------------------------------

@dataclass
class _Graphs:
    """What the engine keeps for one Split."""
    functions: dict = field(default_factory=dict)   # (kind, "static"/"none dims", jit) -> tf.function
    concrete: dict = field(default_factory=dict)    # (that key, shapes, dtypes) -> concrete function
    lengths: dict = field(default_factory=dict)     # kind -> exact lengths traced (other models)


class Engine:
    """Runs graph bodies over rows of embeddings, by length groups and chunks (see the top of the file).

    xla: True/False for every call that does not choose itself, or None (default): $TIG_XLA, else
    no XLA. exact_lengths: how many exact lengths of another model get graphs of their own before
    its None-dim graph (tests create an Engine with a lower one)."""

    def __init__(self, xla=None, exact_lengths=EXACT_LENGTHS_PER_MODEL):
        self.xla, self.exact_lengths = xla, exact_lengths
        self._graphs = weakref.WeakKeyDictionary()   # Split -> _Graphs; freed with the Split

    def graphs(self, split):
        if split not in self._graphs:
            self._graphs[split] = _Graphs()
        return self._graphs[split]

    def traces(self):
        """Graphs traced so far by this engine, over every live model and kind (evaluate.py reports it)."""
        return sum(fn.experimental_get_tracing_count() for graphs in list(self._graphs.values())
                   for fn in graphs.functions.values())

    def traces_by_kind(self, split):
        """{(kind, "static" or "none dims", xla): traces} of one Split's graphs."""
        graphs = self._graphs.get(split)
        return {} if graphs is None else {key: fn.experimental_get_tracing_count()
                                          for key, fn in graphs.functions.items()}

    def choose_xla(self, xla=None):
        """The call's XLA choice: xla if given, else the engine's, else $TIG_XLA (read now), else XLA_DEFAULT."""
        for choice in (xla, self.xla):
            if choice is not None:
                return bool(choice)
        choice = xla_from_env()
        return XLA_DEFAULT if choice is None else choice

    def use_xla(self, split, xla=None):
        """Whether a call compiles its graphs with XLA: never for splits XLA may not compile
        (Split.compiles); else the call's choice (choose_xla). The same for every kind and length."""
        return bool(split.compiles) and self.choose_xla(xla)

    def function_for(self, split, kind, body, args, jit=False):
        """The concrete function that runs body(split)(*args): traced on these args' shapes with
        the number of rows open, on their exact shapes with XLA (jit), or on None dims (a
        none_dims split, or another model past its exact_lengths lengths; never jit)."""
        graphs = self.graphs(split)
        none_dims = split.none_dims or (not split.padding_invariant and self._over_length_budget(
            graphs, kind, args[0].shape[1]))
        jit = jit and not none_dims     # a None-dim graph would compile again for every shape
        key = (kind, "none dims" if none_dims else "static", jit)
        if key not in graphs.functions:
            owner = weakref.ref(split)   # the graphs must not keep their model alive
            graphs.functions[key] = tf.function(lambda *a: body(owner())(*a), jit_compile=jit)
        shapes = tuple(tuple([None] * len(a.shape) if none_dims else a.shape if jit else [None, *a.shape[1:]])
                       for a in args)
        concrete_key = (key, shapes, tuple(a.dtype for a in args))
        if concrete_key not in graphs.concrete:
            graphs.concrete[concrete_key] = graphs.functions[key].get_concrete_function(
                *[tf.TensorSpec(s, a.dtype) for s, a in zip(shapes, args)])
        return graphs.concrete[concrete_key]

    def _over_length_budget(self, graphs, kind, length):
        lengths = graphs.lengths.setdefault(kind, set())
        if length not in lengths and len(lengths) >= self.exact_lengths:
            return True
        lengths.add(length)
        return False

    def run(self, split, kind, body, arrays, xla=None, rows=None):
        """body(split)(*arrays) over rows, by length groups and chunks. arrays[0] is the
        embeddings [n,L,D], arrays[1] the context, then per-row arrays. Returns the outputs (numpy,
        each [n, ...]); [n, l, D] outputs are cut back to (or zero-padded to) the given L."""
        jit = self.use_xla(split, xla)     # once per call ($TIG_XLA read now), the same for every group
        embeddings, context = arrays[0], np.asarray(arrays[1])
        n, length, dim = embeddings.shape
        pieces = []    # (row indices, outputs of their chunk)
        for run_length, group_rows, group in length_groups(split, context, [embeddings, context, *arrays[2:]], 2):
            cap = chunk_cap(run_length, dim, rows)
            for start, size, padded in chunks(len(group_rows), cap, pad=jit):
                args = [tf.constant(pad_rows(a[start:start + size], padded)) for a in group]
                out = self.function_for(split, kind, body, args, jit)(*args)
                pieces.append((group_rows[start:start + size],
                               [np.asarray(o)[:size] for o in (out if isinstance(out, (tuple, list)) else (out,))]))
        return [gather_rows(n, length, [(r, out[i]) for r, out in pieces]) for i in range(len(pieces[0][1]))]

    def outputs(self, split, embeddings, context, xla=None, rows=None):
        """The head's outputs [B,C] for embeddings [B,L,D] (numpy) and their context."""
        return self.run(split, "outputs", head_of, [embeddings, context], xla, rows)[0]

    def gradient(self, split, embeddings, context, target, xla=None):
        """(dF_t/dx [B,L,D], F_t [B]) at the given embeddings."""
        return self.run(split, "gradient", gradient_of_target, [embeddings, context, target], xla)

    def path_gradient(self, split, x, x0, context, target, nodes, weights, rows=None, xla=None):
        """sum_k w_k dF_t(x'+a_k(x-x'))/dx [B,L,D]. Per length group the B x S (text, node) pairs,
        sample-major, stream through one fused graph (path_gradient_sum) in chunks of a fixed
        number of pairs; memory stays flat in S."""
        jit = self.use_xla(split, xla)     # once per call ($TIG_XLA read now), the same for every group
        batch, length, dim = x.shape
        steps = len(nodes)
        nodes, weights = nodes.astype(np.float32), weights.astype(np.float32)
        total = np.zeros_like(x)
        for run_length, group_rows, group in length_groups(split, context, [x, x0, np.asarray(context), target], 3):
            keep, pairs, cap = min(length, run_length), len(group_rows) * steps, chunk_cap(run_length, dim, rows)
            for start, size, padded in chunks(pairs, cap, pad=jit):
                pair = np.arange(start, start + padded)
                first = start // steps
                # the texts this chunk touches; with XLA a power of two of them (padded with copies)
                slots = slots_for(padded, steps) if jit else (start + size - 1) // steps - first + 1
                slot = np.minimum(pair // steps - first, slots - 1).astype(np.int32)
                pair_weights = np.where(np.arange(padded) < size, weights[pair % steps], 0).astype(np.float32)
                args = [tf.constant(pad_rows(a[first:first + slots], slots)) for a in group] + [
                    tf.constant(slot), tf.constant(nodes[pair % steps]), tf.constant(pair_weights)]
                out = self.function_for(split, "path", path_gradient_sum, args, jit)(*args).numpy()
                texts = min(slots, len(group_rows) - first)
                total[group_rows[first:first + texts], :keep] += out[:texts, :keep]
        return total


ENGINE = Engine()
