"""Split any Keras 3 text classifier at an Embedding layer, so the explainers can feed it
points of their own (the integration path) in place of the vectors the layer looks up.

    split = split_model(model, layer=None)
    x, context, token_ids = split.lookup(inputs)     # x: the Embedding layer's output [B,L,D]
    outputs = split.head(x, context)                 # == model(inputs), as [B, C] scores

This is the hook approach of Captum's LayerIntegratedGradients: while a tf.function is being
traced, the chosen Embedding layer's `call` is replaced on that one layer object by a function
that returns the given tensor (and, for `lookup`, records the ids it received), and it is put
back right after the trace. Keras still computes the layer's mask from the real ids, so
`mask_zero=True` models keep masking. No weight is read into or written to a copy; nothing is
traced again on later calls (one trace per model, layer and input kind, with None dims).

Models built by model.py keep their own, faster split (model.split_at_embedding, which returns
the same Split object); every other model goes through `split_model` here:
Sequential, functional, subclassed and nested models, int token-id inputs, and string inputs
through a TextVectorization layer inside the model.

Which Embedding: `layer=None` runs the model once and keeps the Embedding layers whose input is
the token ids (the model's int input, or a TextVectorization output); exactly one must remain
(position embeddings, fed by a range, drop out). Otherwise the error lists the candidates and
asks for `layer="name"` (or pass the layer object).

Outputs, as `output_kind`: "softmax" (one probability per class), "sigmoid" (one unit p,
explained as two classes [1 - p, p]), "raw" (no activation on the last layer: the raw scores
are explained; a single raw unit z is a binary logit, explained as [-z, z]).
"""
import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf
import keras
from keras.src.backend import get_keras_mask, set_keras_mask   # Keras 3's mask on a tensor

from cli import UserError
from hub_inputs import HubInputs
from tokenizer import PAD_ID, UNK_ID  # noqa: F401  (0 and 1 are also TextVectorization's padding and OOV ids)

OUTPUT_KINDS = ("softmax", "sigmoid", "raw")


@dataclass
class Split:
    """A model cut at its embedding. Unpacks as (embed, head) like model.split_at_embedding did.

    embed(inputs) -> (embeddings [B,L,D] float32, context)
    head(embeddings, context) -> outputs [B,C] (softmax probabilities, [1-p, p], or raw scores)
    lookup(inputs) -> (embeddings np [B,L,D], context tf tensor, token_ids np int32 [B,L])
    embed_ids(token_ids) -> the Embedding layer's vectors for other ids (for pad/unk baselines)
    context: what the head needs besides the embeddings; the PAD mask for model.py's models,
        the model's own input (ids or strings) for any other model, or the token ids when a
        TextVectorization inside the model makes them. Tiled along the batch axis
        on the integration path, so its first axis is the batch.
    """
    embed: Callable
    head: Callable
    lookup: Callable
    embed_ids: Callable
    layer: object                        # the Embedding layer explained
    key: object                          # traced functions are cached by this
    context_spec: tf.TensorSpec
    output_kind: str = "softmax"
    vocabulary: list = None              # id -> token, when the model carries one (TextVectorization)
    own: bool = False                    # built by model.py
    none_dims: bool = False              # run on one graph with None dims (gradients.none_dim_graphs)
    prepare: Callable = None             # user inputs -> context tensor
    reference: Callable = None           # user inputs -> the model's own [B, C] scores (verify_split)
    fixed_ids: tuple = (PAD_ID,)         # ids that keep their embedding on the path and score 0.0
    extra: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.embed, self.head))


# --- call interception -------------------------------------------------------------

class intercept:
    """Replace `call` on given layer objects for the duration of a with-block (only on those
    objects: the class and every other instance are untouched), then put it back."""

    def __init__(self, replacements):
        self.replacements = replacements      # {layer: function(original_call, *args, **kwargs)}

    def __enter__(self):
        self.saved = []
        for layer, fn in self.replacements.items():
            own = layer.__dict__.get("call")   # normally absent: `call` comes from the class
            original = layer.call
            self.saved.append((layer, own))
            object.__setattr__(layer, "call", lambda *a, _fn=fn, _orig=original, **k: _fn(_orig, *a, **k))
        return self

    def __exit__(self, *exc):
        for layer, own in self.saved:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
        return False


# --- finding the layer ----------------------------------------------------------------

def all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)


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


def output_kind(model):
    """softmax, sigmoid or raw, from the activation of the layer that produces the output."""
    last = model
    for _ in range(50):
        if isinstance(last, keras.Sequential) and last.layers:
            last = last.layers[-1]
        elif isinstance(last, keras.Model) and getattr(last, "_outputs", None) and \
                hasattr(last.outputs[0], "_keras_history"):
            last = last.outputs[0]._keras_history.operation
        elif isinstance(last, keras.Model) and last.layers:      # subclassed: the last layer it tracks
            last = last.layers[-1]
        else:
            break
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "") if activation is not None else "linear"
    if isinstance(last, keras.layers.Softmax):
        name = "softmax"
    return {"softmax": "softmax", "sigmoid": "sigmoid"}.get(name, "raw")


def as_classes(outputs, kind):
    """Model outputs -> [B, C] scores: a single sigmoid unit p -> [1-p, p], a single raw unit z -> [-z, z]."""
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape.rank == 1:
        outputs = outputs[:, None]
    if outputs.shape[-1] == 1:
        if kind == "sigmoid":
            return tf.concat([1 - outputs, outputs], axis=-1)
        return tf.concat([-outputs, outputs], axis=-1)
    return outputs


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
REFERENCE_ROWS = 256    # the model's own forward pass on the explained batch, this many rows at a time


def model_scores(model, inputs, kind, rows=REFERENCE_ROWS):
    """The model's own outputs on its own inputs (a tensor or array [N, ...], or a dict of them),
    as [N, C] class scores, in eager calls of `rows` rows."""
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    parts = []
    for start in range(0, int(first.shape[0]), rows):
        part = ({k: v[start:start + rows] for k, v in inputs.items()} if isinstance(inputs, dict)
                else inputs[start:start + rows])
        parts.append(np.asarray(as_classes(model(part, training=False), kind)))
    return np.concatenate(parts)


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

_SPLITS = {}     # (id(model), layer, input dtype) -> (model, Split); the model is kept alive with it


def model_input_rank(model):
    try:
        return len(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def prepare_inputs(model, inputs):
    """User inputs -> the tensor the model takes: a list of strings, or int token ids [B, L];
    for a model that takes a dict with token_ids (KerasHub tasks), that dict packed (hub_inputs.py)."""
    hub = HubInputs.of(model)
    if hub is not None:
        return hub.pack(hub.features(inputs))
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OUS":
        inputs = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in inputs.reshape(-1)]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        texts = np.asarray(inputs, dtype=object)
        rank = model_input_rank(model) or 1
        return tf.constant(texts.reshape((-1,) + (1,) * (rank - 1)), tf.string)
    if isinstance(inputs, tf.Tensor) and inputs.dtype == tf.string:
        return inputs
    from gradients import prepare_ids
    return tf.constant(prepare_ids(inputs))


def split_model(model, layer=None, inputs=None):
    """The Split of any Keras 3 model at an Embedding layer (see the top of this file).
    inputs: example inputs used once to find the Embedding layer fed by the token ids."""
    hub = HubInputs.of(model)
    if hub is None and isinstance(model, keras.Model) and len(getattr(model, "_inputs", None) or [None]) > 1:
        raise UserError(f"model {model.name!r} takes {len(model.inputs)} inputs; only single-input text "
                        "classifiers can be explained")
    if inputs is None:
        raise ValueError("split_model needs example inputs to find the Embedding layer fed by the token ids")
    context = prepare_inputs(model, inputs)
    cache_key = (id(model), layer if layer is None or isinstance(layer, str) else id(layer), context.dtype.name,
                 context.shape.rank)
    if cache_key in _SPLITS:
        return _SPLITS[cache_key][1]
    chosen, vectorizer = choose_layer(model, context, layer, hub)
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
    head_spec = tf.TensorSpec([None, None], tf.int32) if strings_by_ids else spec
    trailing = [int(d) for d in context.shape[1:]]

    def run_head(embeddings, context):
        def replace(original, ids, *args, **kwargs):
            return path_point(original, ids, embeddings, chosen, *args, **kwargs)
        replacements = {chosen: replace}
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

    def embed(inputs):
        x, context, _ = lookup(inputs)
        return tf.constant(x), context

    def embed_ids(token_ids):
        return np.asarray(chosen(tf.constant(token_ids, tf.int32)), np.float32)

    vocabulary = hub.vocabulary if hub else None
    if vectorizer is not None:
        vocabulary = [str(t) for t in vectorizer.get_vocabulary()]
    split = Split(embed=embed, head=run_head, lookup=lookup, embed_ids=embed_ids, layer=chosen,
                  key=(model, chosen, strings_by_ids), context_spec=head_spec, output_kind=kind, vocabulary=vocabulary,
                  prepare=lambda inputs: prepare_inputs(model, inputs),
                  reference=lambda inputs: model_scores(model, (hub.unpack if hub else lambda c: c)(
                      prepare_inputs(model, inputs)), kind),
                  fixed_ids=hub.special_ids if hub else (PAD_ID,),
                  extra={"vectorizer": vectorizer})
    _SPLITS[cache_key] = (model, split)
    return split
