"""Split a Keras 3 text classifier at its Embedding layer: the one place models are cut, so the
explainers can feed points of their own (the integration path) in place of the vectors it looks up.

    split = split_at_embedding(model, inputs, layer=None)
    x, context, token_ids = split.lookup(inputs)     # x: the Embedding layer's output [B,L,D]
    outputs = split.head(x, context)                 # == model(inputs), as [B, C] scores

Two constructors, one Split:
  - this project's models (tig/model.py: sub-models "embedder" and "head"): the head is called on
    the embedder's output directly (own_split, no interception; padding-invariant, so the
    engine runs each text at the bucket of its own length);
  - any other Keras 3 model (intercepted_split): Sequential, functional, subclassed and nested
    models, int token-id inputs, string inputs through a TextVectorization layer inside the
    model, and KerasHub tasks (dict inputs, model_io.py). This is the hook approach of
    Captum's LayerIntegratedGradients: while a tf.function is being traced, the chosen
    Embedding layer's `call` is replaced on that one layer object by a function that returns
    the given tensor (and, for `lookup`, records the ids it received), and it is put back right
    after the trace. The layer's own mask is kept (path_point). No weight is read into or
    written to a copy.

A model's Splits are kept on the model object (one per layer and input kind), so they live and
die with it, and so do the graphs the engine traced for them (engine.py).

Which Embedding: `layer=None` runs the model once and keeps the Embedding layers whose input is
the token ids (the model's int input, or a TextVectorization output); exactly one must remain
(position embeddings, fed by a range, drop out). Otherwise the error lists the candidates and
asks for `layer="name"` (or pass the layer object).

Outputs, as `output_kind`: "softmax" (one probability per class), "sigmoid" (one unit p,
explained as two classes [1 - p, p]), "raw" (no activation on the last layer: the raw scores
are explained; a single raw unit z is a binary logit, explained as [-z, z]).

verify_split checks, on every batch explained, that the split at alpha = 1 computes the model's
own outputs: an explanation is of the model's own function or it is refused.
"""
import functools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import tensorflow as tf
import keras

from tig.errors import UserError
from tig.first_token import first_position_call, last_layer_reading_first
from tig.keras_compat import get_keras_mask, nested_layers, replace_call, restore_call, set_keras_mask
from tig.model_io import HubInputs, OwnForward, as_classes, model_scores, output_kind, prepare_inputs
from tig.tokenizer import PAD_ID
from tig.validate import prepare_ids

OUTPUT_KINDS = ("softmax", "sigmoid", "raw")


@dataclass(eq=False)    # compared and hashed by identity: the engine keys its graphs by the Split
class Split:
    """A model cut at its embedding.

    head(embeddings, context) -> outputs [B,C] (softmax probabilities, [1-p, p], or raw scores)
    lookup(inputs) -> (embeddings np [B,L,D], context tf tensor, token_ids np int32 [B,L])
    embed_ids(token_ids) -> the Embedding layer's vectors for other ids (for pad/unk baselines)
    context: what the head needs besides the embeddings; the PAD mask for tig/model.py's models,
        the model's own input (ids or strings) for any other model, or the token ids when a
        TextVectorization inside the model makes them. Tiled along the batch axis
        on the integration path, so its first axis is the batch.
    """
    head: Callable
    lookup: Callable
    embed_ids: Callable
    layer: object                        # the Embedding layer explained
    output_kind: str = "softmax"
    vocabulary: list = None              # id -> token, when the model carries one (TextVectorization)
    padding_invariant: bool = False      # PAD columns change nothing (tig/model.py's models): length buckets
    none_dims: bool = False              # run on one graph with None dims (none_dim_graphs)
    compiles: bool = False               # XLA can compile its graphs (no string ops): tig/model.py's, KerasHub ids
    reference: Callable = None           # user inputs -> the model's own [B, C] scores (verify_split)
    fixed_ids: tuple = (PAD_ID,)         # ids that keep their embedding on the path and score 0.0


def none_dim_graphs(split):
    """The same split run on one None-dim graph per kind, at the given lengths, without XLA: the
    path every model took before static shapes (bench/bench_ig.py's "before", the tests' reference)."""
    return replace(split, padding_invariant=False, none_dims=True, compiles=False)


# --- call interception -------------------------------------------------------------

class intercept:
    """Replace `call` on given layer objects for the duration of a with-block (only on those
    objects: the class and every other instance are untouched), then put it back."""

    def __init__(self, replacements):
        self.replacements = replacements      # {layer: function(original_call, *args, **kwargs)}

    def __enter__(self):
        self.saved = [(layer, replace_call(layer, fn)) for layer, fn in self.replacements.items()]
        return self

    def __exit__(self, *exc):
        for layer, own in self.saved:
            restore_call(layer, own)
        return False


# --- finding the layer ----------------------------------------------------------------

def all_layers(model):
    return nested_layers(model)


def embedding_layers(model):
    return [l for l in all_layers(model) if isinstance(l, keras.layers.Embedding)]


def text_vectorizers(model):
    return [l for l in all_layers(model) if isinstance(l, keras.layers.TextVectorization)]


def describe(layers_):
    return ", ".join(f"{l.name!r} ({l.input_dim}x{l.output_dim})" for l in layers_)


def probe(model, context):
    """Run the model once, eagerly, recording what each Embedding layer received
    ({layer: [ids, ...]}) and what each TextVectorization layer produced ([(ids, layer), ...])."""
    embedding_inputs, vectorized = {}, []

    def record_embedding(original, inputs, *args, _layer=None, **kwargs):
        embedding_inputs.setdefault(_layer, []).append(np.asarray(inputs))
        return original(inputs, *args, **kwargs)

    def record_vectorizer(original, *args, _layer=None, **kwargs):
        out = original(*args, **kwargs)
        vectorized.append((np.asarray(out), _layer))
        return out

    replacements = {l: functools.partial(record_embedding, _layer=l) for l in embedding_layers(model)}
    replacements.update({l: functools.partial(record_vectorizer, _layer=l) for l in text_vectorizers(model)})
    with intercept(replacements):
        outputs = model(context, training=False)
    return embedding_inputs, vectorized, outputs


def choose_layer(model, context, layer, hub=None):
    """The Embedding layer to explain, and the TextVectorization layer that feeds it (or None)."""
    candidates = embedding_layers(model)
    if not candidates:
        raise UserError(f"model {model.name!r} has no Embedding layer; integrated gradients per token "
                        "needs one (attributions are taken at the Embedding layer's output)")
    if layer is not None and not isinstance(layer, str):
        if layer not in candidates:
            raise UserError(f"the given layer {getattr(layer, 'name', layer)!r} is not an Embedding layer of model "
                            f"{model.name!r}; its Embedding layers: {describe(candidates)}")
    elif isinstance(layer, str):
        named = [l for l in candidates if l.name == layer]
        if not named:
            raise UserError(f"model {model.name!r} has no Embedding layer named {layer!r}; "
                            f"its Embedding layers: {describe(candidates)}")
        layer = named[0]
    embedding_inputs, vectorized, _ = probe(model, hub.unpack(context) if hub else context)
    sources = [(v, tv) for v, tv in vectorized]
    if hub is not None:
        sources.append((np.asarray(hub.token_ids(context)), None))
    elif context.dtype.is_integer:
        sources.append((np.asarray(context), None))

    def fed_by(l):
        for ids in embedding_inputs.get(l, []):
            for source, tv in sources:
                if ids.shape == source.shape and np.array_equal(ids, source):
                    return True, tv
        return False, None

    if layer is None:
        called = [l for l in candidates if l in embedding_inputs]
        fed = [l for l in called if fed_by(l)[0]]
        if len(fed) == 1:
            layer = fed[0]
        elif len(called) == 1 and not fed:
            layer = called[0]
        else:
            raise UserError(f"model {model.name!r} has {len(candidates)} Embedding layers and "
                            f"{'none' if not fed else len(fed)} of them clearly takes the token ids; "
                            f"choose one with layer=\"name\": {describe(fed or called or candidates)}")
    calls = len(embedding_inputs.get(layer, []))
    if calls != 1:
        raise UserError(f"Embedding layer {layer.name!r} is called {calls} times per forward pass; "
                        "attributions need a layer that runs exactly once")
    return layer, fed_by(layer)[1]


def path_point(original, ids, embeddings, layer, *args, **kwargs):
    """What the intercepted Embedding layer returns: the path point `embeddings`, carrying the Keras
    mask the layer itself gives the real ids. The original call runs on the real ids (one lookup,
    not on the gradient's path) and its mask is copied: Keras' Embedding computes its mask in
    compute_mask, but keras_hub's ReversibleEmbedding (inside TokenAndPositionEmbedding and every
    KerasHub backbone) sets it inside `call`, which a replaced `call` would otherwise lose, silently
    unmasking the padding for the layers after it. A reverse call (tied output projection) is
    passed through untouched."""
    if kwargs.get("reverse") or (args and args[0] is True):
        return original(ids, *args, **kwargs)
    mask = get_keras_mask(original(ids, *args, **kwargs))
    if mask is None:
        mask = layer.compute_mask(ids)
    out = tf.identity(tf.cast(embeddings, layer.compute_dtype))   # a fresh tensor to carry the mask
    if mask is not None:
        set_keras_mask(out, mask)
    return out


# --- the check: the split explains the model's own function ---------------------------

SPLIT_RTOL = 1e-5       # relative, and the same times max(1, |output|) absolute, per class score


def verify_split(split, inputs, outputs):
    """Refuse to explain a different function: the split at alpha = 1 (the real embeddings) gave
    `outputs` [B, C] on `inputs`; the model's own forward pass on the same inputs must give the
    same scores (to SPLIT_RTOL relative, and SPLIT_RTOL * max(1, |scores|) absolute), else a
    one-line UserError naming the layer. A split with no model to compare with (an (embed, head)
    pair given by hand) is not checked."""
    if split.reference is None:
        return
    expected = np.asarray(split.reference(inputs), np.float32)
    outputs = np.asarray(outputs, np.float32)
    if expected.shape != outputs.shape:
        raise UserError(f"the model split at layer {getattr(split.layer, 'name', split.layer)!r} gives outputs of "
                        f"shape {outputs.shape}, the model itself {expected.shape}; refusing to explain a different "
                        "function")
    gap = np.abs(outputs - expected)
    allowed = SPLIT_RTOL * np.abs(expected) + SPLIT_RTOL * max(1.0, float(np.abs(expected).max(initial=0)))
    if np.all(gap <= allowed):
        return
    row, col = np.unravel_index(np.argmax(gap - allowed), gap.shape)
    name = getattr(split.layer, "name", split.layer)
    raise UserError(f"the model split at layer {name!r} does not compute the model's own function: on input {row}, "
                    f"class {col}, it gives {outputs[row, col]:.7g} where the model gives {expected[row, col]:.7g}; "
                    f"refusing to explain a different function (is the model random at inference, or does a "
                    f"layer depend on how {name!r} is called? choose another layer with layer=/--layer)")


# --- the split ------------------------------------------------------------------------

CACHE_ATTRIBUTE = "_tig_splits"   # {(layer, input kind): Split} on the model object itself


def cached(model, key, make):
    """The model's Split for `key`, made once. Kept on the model (not in a global table), so a
    model no one uses any more is freed with its Splits and the engine's graphs for them."""
    splits = model.__dict__.get(CACHE_ATTRIBUTE)
    if splits is None:
        splits = {}
        object.__setattr__(model, CACHE_ATTRIBUTE, splits)   # past Keras' attribute tracking
    if key not in splits:
        splits[key] = make()
    return splits[key]


def own_parts(model):
    """(embedder, head, embedding layer) of a model built by tig/model.py, else None."""
    try:
        embedder, head = model.get_layer("embedder"), model.get_layer("head")
        return embedder, head, embedder.get_layer("embedding")
    except (ValueError, AttributeError):
        return None


def split_at_embedding(model, inputs=None, layer=None):
    """The Split of `model` at its Embedding layer: this project's models by their own parts
    (own_split), any other Keras 3 model by interception (intercepted_split), which needs example
    `inputs` to find the Embedding layer fed by the token ids."""
    parts = own_parts(model)
    if parts is not None and layer in (None, "embedding", parts[2]):
        return cached(model, ("own",), lambda: own_split(model, *parts))
    if inputs is None:
        raise UserError(f"model {getattr(model, 'name', model)!r} has no 'embedder'/'head' sub-models; "
                        "build it with model.build_model or model.compose, or pass inputs to find its Embedding")
    return intercepted_split(model, layer, inputs)


def own_split(model, embedder, head, embedding):
    """tig/model.py's models: embedder(ids) -> (embeddings, PAD mask), head([embeddings, mask]) -> softmax."""
    def run_head(embeddings, mask):
        return head([embeddings, mask], training=False)

    forward = OwnForward(model)     # the reference: the model's own call, traced after a few calls

    def lookup(inputs):
        token_ids = prepare_ids(inputs)
        embeddings, mask = embedder(tf.constant(token_ids), training=False)
        return np.asarray(embeddings, np.float32), tf.constant(np.asarray(mask)), token_ids

    return Split(head=run_head, lookup=lookup, embed_ids=lambda ids: lookup(ids)[0], layer=embedding,
                 output_kind="softmax", padding_invariant=True, compiles=True,
                 reference=lambda inputs: model_scores(model, tf.constant(prepare_ids(inputs)), "softmax",
                                                       forward=forward))


def intercepted_split(model, layer, inputs):
    """The Split of any Keras 3 model at an Embedding layer, by interception (see the top of this
    file). inputs: example inputs used once to find the Embedding layer fed by the token ids."""
    hub = HubInputs.of(model)
    if hub is None and isinstance(model, keras.Model) and len(getattr(model, "inputs", None) or [None]) > 1:
        raise UserError(f"model {model.name!r} takes {len(model.inputs)} inputs; only single-input text "
                        "classifiers can be explained")
    context = prepare_inputs(model, inputs)
    key = (layer if layer is None or isinstance(layer, str) else id(layer), context.dtype.name, context.shape.rank)
    return cached(model, key, lambda: build_intercepted(model, layer, context, hub))


def build_intercepted(model, layer, context, hub, first_token=True):
    """first_token: a KerasHub task whose head reads one position runs its last encoder layer for
    that position alone (tig/first_token.py; False: the whole layer, the tests' reference)."""
    chosen, vectorizer = choose_layer(model, context, layer, hub)
    last = last_layer_reading_first(model) if hub is not None and first_token else None
    kind = output_kind(model)
    # None batch (and length, for ids); a string input keeps its trailing dims ([B, 1] for keras.Input((1,)))
    spec = tf.TensorSpec([None] + ([None] * (context.shape.rank - 1) if context.dtype != tf.string
                                   else list(context.shape[1:])), context.dtype)
    if hub is not None:      # packed dict [B, K, L]: K is the model's number of inputs
        spec = tf.TensorSpec([None, len(hub.names), None], tf.int32)

    # String input tokenized by the TextVectorization that feeds the Embedding: the head takes
    # the token ids as its context and that layer hands them over instead of re-tokenizing every
    # interpolated copy of the texts (the model gets empty strings of the right shape).
    strings_by_ids = context.dtype == tf.string and vectorizer is not None
    trailing = [int(d) for d in context.shape[1:]]

    def run_head(embeddings, context):
        def to_path_point(original, ids, *args, **kwargs):
            return path_point(original, ids, embeddings, chosen, *args, **kwargs)
        replacements = {chosen: to_path_point}
        if last is not None:
            replacements[last] = first_position_call
        model_input = context
        if strings_by_ids:
            replacements[vectorizer] = lambda original, *args, **kwargs: tf.cast(context, tf.int64)
            model_input = tf.fill(tf.concat([tf.shape(context)[:1], tf.constant(trailing, tf.int32)], 0), "")
        if hub is not None:
            model_input = hub.unpack(context)
        with intercept(replacements):
            outputs = model(model_input, training=False)
        return as_classes(outputs, kind)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def capture(context):
        seen = []

        def record(original, ids, *args, **kwargs):
            out = original(ids, *args, **kwargs)
            seen.append((ids, out))
            return out
        with intercept({chosen: record}):
            model(hub.unpack(context) if hub else context, training=False)
        ids, out = seen[0]
        return tf.cast(ids, tf.int32), tf.cast(out, tf.float32)

    def lookup(inputs):
        context = prepare_inputs(model, inputs)
        ids, x = capture(context)
        if x.shape.rank != 3 or ids.shape.rank != 2 or x.shape[0] != context.shape[0]:
            raise UserError(f"Embedding layer {chosen.name!r} outputs shape {tuple(x.shape)}, not [batch, length, dim] "
                            "per text: it does not embed the tokens of each text (a position embedding?)")
        return np.asarray(x, np.float32), (ids if strings_by_ids else context), np.asarray(ids, np.int32)

    def embed_ids(token_ids):
        return np.asarray(chosen(tf.constant(token_ids, tf.int32)), np.float32)

    vocabulary = hub.vocabulary if hub else None
    forward = OwnForward(model)     # the reference: the model's own call, traced after a few calls
    if vectorizer is not None:
        vocabulary = [str(t) for t in vectorizer.get_vocabulary()]
    return Split(head=run_head, lookup=lookup, embed_ids=embed_ids, layer=chosen, output_kind=kind,
                 vocabulary=vocabulary, fixed_ids=hub.special_ids if hub else (PAD_ID,),
                 compiles=hub is not None,    # a KerasHub backbone on packed int ids: no string op in the graph
                 reference=lambda inputs: model_scores(model, (hub.unpack if hub else lambda c: c)(
                     prepare_inputs(model, inputs)), kind, forward=forward))
