"""Load a user's own Keras 3 text classifier (a .keras file) for the command-line tools.

    ckpt = load_user_model("my_model.keras")                               # string input (TextVectorization inside)
    ckpt = load_user_model("int_model.keras", vocab="vocab.txt", classes="neg,pos")
    ckpt = load_user_model("int_model.keras", tokenizer="checkpoints/hotel/tokenizer.json")

The result has the fields the CLIs use from model.Checkpoint:
    .model      the Keras model (never modified)
    .tokenizer  .tokenize(text) -> tokens the model sees; .encode(texts, maxlen) -> the model's input
                (int ids [N, maxlen] post-padded with 0, or for a string-input model a tf.string
                tensor of the texts shaped like its input: explain them with integrated_gradients(model, texts) or the
                encoded array, and read tokens/ids from Attribution.tokens/.token_ids);
                .decode(ids), .vocab (id -> token), .level ("char" or "word"), len()
    .classes    label names (--classes a,b; default "0", "1", ...); a single output unit counts as two classes
    .maxlen     the model's fixed input length, or TextVectorization's output_sequence_length, or --maxlen
    .meta       {"task", "arch": "user", "source", "input": "strings"|"ids", "output_kind", "maxlen",
                 "classes", "layer"}; task is None unless given
    .directory  the folder of the .keras file; .metrics is {}
vocab.txt: one token per line, line number = id (line 1 is id 0, the padding token).
Bad input raises dataset.UserError with a one-line message.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from tig.errors import UserError
from tig.keras_compat import nested_layers
from tig.tokenizer import HubTokenizer, StringInputTokenizer, Tokenizer, VocabularyTokenizer

DEFAULT_MAXLEN = 256           # for an int-input model with no fixed length and no --maxlen


@dataclass
class UserModel:
    model: object
    tokenizer: object
    classes: list
    maxlen: int
    meta: dict
    directory: str = ""
    metrics: dict = field(default_factory=dict)


def read_vocab(path):
    if not os.path.exists(path):
        raise UserError(f"vocabulary file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UserError(f"vocabulary file {path} is empty")
    return [line.rstrip("\r") for line in lines]


def import_custom_objects(path):
    """Import FILE.py, whose import registers the user's layers (@keras.saving.register_keras_serializable)."""
    import importlib.util
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise UserError(f"--custom-objects {path}: give an existing Python file (.py)")
    spec = importlib.util.spec_from_file_location(f"tig_custom_objects_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"--custom-objects {path} failed to import ({e.__class__.__name__}: {e})") from None
    return module


def unknown_class(error):
    """The class name a Keras loading error could not find, or None."""
    import re
    text = str(error)
    for pattern in (r"[Cc]ould not locate (?:class|function) '([^']+)'", r"Unknown (?:layer|object|class)[^']*'([^']+)'"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return None


def position_capacity(model):
    """(positions, layer name) of the model's position embedding, or (None, None)."""
    for layer in nested_layers(model):
        if "PositionEmbedding" in type(layer).__name__ and getattr(layer, "sequence_length", None):
            return int(layer.sequence_length), layer.name
    return None, None


def load_user_model(path, vocab=None, tokenizer=None, classes=None, maxlen=None, task=None, layer=None,
                    padding=None, custom_objects=None):
    """Load `path` (.keras) with its tokenizer (see the top of this file). classes: "a,b" or a list.
    padding: "pre" or "post" (default) for an int-input model; custom_objects: a .py file to import first."""
    import warnings
    import keras
    from tig.embedding_split import embedding_layers, output_kind, text_vectorizers
    from tig.model_io import HubInputs, tokenizer_of
    # Keras' UserWarnings (compile config not restored, masks destroyed by position embeddings, ...)
    # are about training and layer internals, not about the explanation: kept off the CLI's output
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(_hub)?(\.|$)")
    if not os.path.exists(path):
        raise UserError(f"model file not found: {path}")
    if vocab and tokenizer:
        raise UserError("give --vocab or --tokenizer, not both")
    if custom_objects:
        import_custom_objects(custom_objects)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        missing = unknown_class(e)
        if missing:
            raise UserError(f"cannot load {path}: it uses {missing!r}, which is not registered with Keras; give "
                            "--custom-objects FILE.py, a module that defines it with "
                            "@keras.saving.register_keras_serializable()") from None
        raise UserError(f"cannot load {path} as a Keras 3 model ({e.__class__.__name__}: {first})") from None
    if not isinstance(model, keras.Model):
        raise UserError(f"{path} does not hold a Keras model")
    embeddings = embedding_layers(model)
    if not embeddings:
        raise UserError(f"{path}: the model has no Embedding layer; per-token attributions need one")
    try:
        input_dtype = model.inputs[0].dtype
        input_shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        input_dtype, input_shape = None, None
    strings = input_dtype == "string"
    hub = HubInputs.of(model)
    if hub is not None and tokenizer_of(model) is not None and not (vocab or tokenizer):
        strings = True     # a KerasHub task with its preprocessor: texts in, the preprocessor makes the dict
        tok = HubTokenizer(model, hub)
        fixed = hub.sequence_length
        if fixed and maxlen and maxlen != fixed:
            raise UserError(f"--maxlen {maxlen} does not match the preprocessor's sequence_length {fixed}")
        maxlen = fixed or maxlen or DEFAULT_MAXLEN
    elif strings:
        vectorizers = text_vectorizers(model)
        if not vectorizers:
            raise UserError(f"{path}: the model takes strings but has no TextVectorization layer")
        tok = StringInputTokenizer(model, vectorizers[0])
        maxlen = maxlen or vectorizers[0].get_config().get("output_sequence_length") or DEFAULT_MAXLEN
    else:
        if vocab:
            tok = VocabularyTokenizer(read_vocab(vocab), padding=padding)
        elif tokenizer:
            try:
                tok = Tokenizer.load(tokenizer)
            except (ValueError, OSError) as e:
                raise UserError(f"tokenizer {tokenizer}: {e}") from None
        else:
            raise UserError(f"{path}: the model takes token ids; give --vocab vocab.txt (one token per line, "
                            "line number = id) or --tokenizer tokenizer.json")
        rows = max(layer_.input_dim for layer_ in embeddings)
        if len(tok) > rows:
            raise UserError(f"the vocabulary has {len(tok)} tokens but the model's Embedding has {rows} rows; "
                            "they do not belong together")
        fixed = input_shape[1] if input_shape and len(input_shape) == 2 else None
        if fixed and maxlen and maxlen != fixed:
            raise UserError(f"--maxlen {maxlen} does not match the model's fixed input length {fixed}")
        capacity, where = position_capacity(model)
        if capacity and maxlen and maxlen > capacity:
            raise UserError(f"--maxlen {maxlen} is beyond the model's {capacity} positions (layer {where!r}); "
                            f"give --maxlen {capacity} or less")
        maxlen = fixed or maxlen or (min(DEFAULT_MAXLEN, capacity) if capacity else DEFAULT_MAXLEN)
    if padding and strings:
        raise UserError("--padding is for a model that takes token ids; this one pads its own inputs")
    kind = output_kind(model)
    example = tok.encode(["a"], maxlen)
    if hub is not None:
        from tig.attribution import class_scores
        raw = class_scores(model, example)
        units = 1 if output_kind(model) == "sigmoid" or getattr(model.outputs[0], "shape", (0,))[-1] == 1 \
            else raw.shape[-1]
    else:
        units = int(np.asarray(model(example, training=False)).reshape(1, -1).shape[-1])
    count = 2 if units == 1 else units
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    classes = list(classes) if classes else [str(i) for i in range(count)]
    if len(classes) != count:
        raise UserError(f"{len(classes)} class names given but the model has {count} classes"
                        f"{' (one output unit: class 0 and class 1)' if units == 1 else ''}")
    meta = {"task": task, "arch": "user", "source": os.path.abspath(path), "input": "strings" if strings else "ids",
            "padding": None if strings else (padding or "post"),
            "output_kind": kind, "maxlen": int(maxlen), "classes": classes,
            "layer": layer if layer is None or isinstance(layer, str) else layer.name}
    return UserModel(model, tok, classes, int(maxlen), meta, os.path.dirname(os.path.abspath(path)))
