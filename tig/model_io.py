"""What a Keras 3 text classifier takes and gives: user inputs (strings, token ids, KerasHub
dicts) as the tensor the model is fed, and its outputs as [B, C] class scores.

    prepare_inputs(model, inputs)           # strings [B] / [B, 1], ids [B, L], or a packed dict
    as_classes(model(x), output_kind(model))  # softmax / sigmoid [1-p, p] / raw [-z, z] -> [B, C]

KerasHub text classifiers (and any Keras 3 model that takes a dict with a `token_ids` entry):

    hub = HubInputs.of(model)               # None for a model that does not take such a dict
    features = hub.features(inputs)         # {"token_ids": [B,L], "padding_mask": ..., ...} (tensors)
    packed = hub.pack(features)             # int32 [B, K, L]: one entry per row of axis 1
    hub.unpack(packed)                      # the dict again, each entry in the model's input dtype

Accepted inputs: raw strings for a task saved with its preprocessor (`model.preprocessor` makes
the dict, as `model.predict(texts)` does); a dict of arrays as KerasHub preprocessors produce it;
or plain token ids [B, L] (padding_mask = ids != the padding id, segment_ids = 0, any other
entry refused). Only `token_ids` is explained: the attribution is taken at the Embedding layer
its ids feed (backbone.token_embedding, a ReversibleEmbedding); every other entry is part of the
context, held fixed on the path, never interpolated. Packing the dict into one int32 tensor lets
the explainers tile, gather and chunk it like any other context.

Special tokens (Captum's BERT-tutorial convention): the tokenizer's special ids ([CLS], [SEP],
[PAD], [MASK], ...; `special_token_ids`) keep their own embedding on the whole path and score
exactly 0.0; without a tokenizer only the padding id does.
"""
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from tig.errors import UserError
from tig.validate import prepare_ids

IDS_KEY = "token_ids"
MASK_KEY = "padding_mask"
DEFAULT_PAD_ID = 0


def input_structure(model):
    """A functional model's inputs as it was built with them (Functional.input: a tensor, a list, or
    a dict of tensors); None for any other model (Sequential, subclassed)."""
    return getattr(model, "input", None) if isinstance(model, keras.Function) else None


def input_names(model):
    """The keys of a model whose inputs are a dict with a token_ids entry, else None."""
    struct = input_structure(model)
    if isinstance(struct, dict) and IDS_KEY in struct:
        return list(struct)
    return None


def tokenizer_of(model):
    preprocessor = getattr(model, "preprocessor", None)
    return getattr(preprocessor, "tokenizer", None)


@dataclass
class HubInputs:
    model: object
    names: list                  # the model's input keys; the order of axis 1 of a packed context
    dtypes: dict                 # key -> the model's input dtype
    pad_id: int
    special_ids: tuple           # ids that keep their embedding on the path and score 0.0
    vocabulary: list = None      # id -> token (the tokenizer's), or None
    sequence_length: int = None  # the preprocessor's, or None

    @classmethod
    def of(cls, model):
        names = input_names(model)
        if names is None:
            return None
        struct = input_structure(model)
        dtypes = {k: str(getattr(struct[k], "dtype", "int32")) for k in names}
        tokenizer = tokenizer_of(model)
        pad_id, special, vocabulary = DEFAULT_PAD_ID, (DEFAULT_PAD_ID,), None
        if tokenizer is not None:
            pad = getattr(tokenizer, "pad_token_id", None)
            pad_id = int(pad) if pad is not None else DEFAULT_PAD_ID
            special = tuple(sorted({int(i) for i in (getattr(tokenizer, "special_token_ids", None) or [])}
                                   | {pad_id}))
            try:
                vocabulary = [str(t) for t in tokenizer.get_vocabulary()]
            except (AttributeError, NotImplementedError, ValueError):
                vocabulary = None
        length = getattr(getattr(model, "preprocessor", None), "sequence_length", None)
        return cls(model, names, dtypes, pad_id, special, vocabulary, length)

    def features(self, inputs):
        """User inputs (strings, a dict, or ids [B, L]) -> the model's input dict of tensors."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OUS":
            inputs = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in inputs.reshape(-1)]
        if isinstance(inputs, tf.Tensor) and inputs.dtype == tf.string:
            inputs = [t.decode("utf-8") for t in inputs.numpy().reshape(-1)]
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
            preprocessor = getattr(self.model, "preprocessor", None)
            if preprocessor is None:
                raise UserError(f"model {self.model.name!r} was saved without its preprocessor, so it cannot take "
                                f"strings; give token ids or a dict with {', '.join(self.names)}")
            inputs = preprocessor(tf.constant(list(inputs)))
        if isinstance(inputs, dict):
            missing = [k for k in self.names if k not in inputs]
            if missing:
                raise UserError(f"model {self.model.name!r} takes {', '.join(self.names)}; the inputs lack "
                                f"{', '.join(missing)}")
            ids = prepare_ids(np.asarray(inputs[IDS_KEY]))
            out = {}
            for k in self.names:
                value = np.asarray(inputs[k])
                value = value[None] if value.ndim == 1 else value
                if value.shape != ids.shape:
                    raise UserError(f"input {k!r} has shape {value.shape}, token_ids {ids.shape}")
                out[k] = tf.constant(value.astype(self.dtypes[k]))
            return out
        ids = prepare_ids(inputs)
        out = {}
        for k in self.names:
            if k == IDS_KEY:
                value = ids
            elif k == MASK_KEY:
                value = ids != self.pad_id
            elif k == "segment_ids":
                value = np.zeros_like(ids)
            else:
                raise UserError(f"model {self.model.name!r} also takes {k!r}; give the inputs as a dict "
                                f"with {', '.join(self.names)}")
            out[k] = tf.constant(value.astype(self.dtypes[k]))
        return out

    def pack(self, features):
        return tf.stack([tf.cast(features[k], tf.int32) for k in self.names], axis=1)

    def unpack(self, packed):
        return {k: tf.cast(packed[:, i], self.dtypes[k]) for i, k in enumerate(self.names)}

    def token_ids(self, packed):
        return packed[:, self.names.index(IDS_KEY)]


# --- any model's inputs and outputs -----------------------------------------------------

REFERENCE_ROWS = 256    # the model's own forward pass on the explained batch, this many rows at a time


def model_input_rank(model):
    try:
        return len(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def prepare_inputs(model, inputs):
    """User inputs -> the tensor the model takes: a list of strings, or int token ids [B, L];
    for a model that takes a dict with token_ids (KerasHub tasks), that dict packed (HubInputs above)."""
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
    return tf.constant(prepare_ids(inputs))


def output_operation(model):
    """The layer (or keras.ops operation) of a functional model that produces its first output:
    the one of model.operations whose output is that tensor (Operation.output, its first call),
    else the last of them (operations are in graph order)."""
    target = model.outputs[0]
    for operation in reversed(model.operations):
        try:
            produced = operation.output
        except (AttributeError, ValueError):    # never called symbolically
            continue
        if any(t is target for t in keras.tree.flatten(produced)):
            return operation
    return model.operations[-1]


def output_kind(model):
    """softmax, sigmoid or raw, from the activation of the layer that produces the output."""
    last = model
    for _ in range(50):
        if isinstance(last, keras.Sequential) and last.layers:
            last = last.layers[-1]
        elif isinstance(last, keras.Model) and isinstance(last, keras.Function) and last.outputs:
            last = output_operation(last)
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


class OwnForward:
    """The model's own forward pass, model(x, training=False), nothing intercepted: eager for its first
    EAGER_CALLS calls (a one-off explanation pays no trace), then one tf.function with
    reduce_retracing (a 2-layer BERT, 10 rows: 35-45 ms eager, 5-10 ms traced, ~0.3 s per trace)."""
    EAGER_CALLS = 2

    def __init__(self, model):
        self.model, self.calls, self.graph = model, 0, None

    def __call__(self, inputs):
        self.calls += 1
        if self.calls <= self.EAGER_CALLS:
            return self.model(inputs, training=False)
        if self.graph is None:
            model = self.model
            self.graph = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return self.graph(inputs)


def model_scores(model, inputs, kind, rows=REFERENCE_ROWS, forward=None):
    """The model's own outputs on its own inputs (a tensor or array [N, ...], or a dict of them),
    as [N, C] class scores, in calls of `rows` rows: eager calls of the model, or `forward` (an
    OwnForward of it)."""
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    forward = forward or (lambda part: model(part, training=False))
    parts = []
    for start in range(0, int(first.shape[0]), rows):
        part = ({k: v[start:start + rows] for k, v in inputs.items()} if isinstance(inputs, dict)
                else inputs[start:start + rows])
        parts.append(np.asarray(as_classes(forward(part), kind)))
    return np.concatenate(parts)
