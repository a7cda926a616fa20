"""Argument checks of the Python API: a wrong type is a TypeError, a wrong value a ValueError, each
naming the argument; nothing is coerced (steps=2.7 is not 2 steps, target=True is not class 1).

Called at the top of the public functions (integrated_gradients, gradients, visualize.explain,
load_checkpoint), so a bad argument fails before any model runs.
"""
import math
import numbers

import numpy as np

MAX_STEPS = 1024   # integrated gradients' quadrature nodes at most (Gauss-Legendre's set-up grows as steps^2)
BASELINES = ("zero", "pad", "unk", "mask")   # integrated gradients' named baselines (make_baseline)


def is_int(value):
    """An integer, and not a bool (True is not class 1)."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_model(model, name="model"):
    if model is None:
        raise TypeError(f"{name} must be a Keras model, an (embed, head) pair or a Split, got None")


def check_steps(steps, name="steps"):
    if isinstance(steps, str):
        if steps != "auto":
            raise ValueError(f"{name} must be an integer from 1 to {MAX_STEPS} or 'auto', got {steps!r}")
        return
    if not is_int(steps):
        raise TypeError(f"{name} must be an integer from 1 to {MAX_STEPS} or 'auto', got {steps!r} "
                        f"({type(steps).__name__})")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"{name} must be between 1 and {MAX_STEPS}, got {steps}")


def check_positive_int(value, name):
    if value is None:
        return
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def check_tolerance(tolerance, name="tolerance"):
    if tolerance is None:
        return
    if not isinstance(tolerance, (numbers.Real, np.floating, np.integer)) or isinstance(tolerance, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {tolerance!r} ({type(tolerance).__name__})")
    if not math.isfinite(float(tolerance)) or tolerance <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {tolerance}")


def check_baseline(baseline, name="baseline"):
    """A baseline name is checked where it is used; an array must be finite numbers."""
    if baseline is None or isinstance(baseline, str):
        return
    array = np.asarray(baseline)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)) or array.dtype == bool:
        raise TypeError(f"{name} must be a baseline name or an array of numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")


def check_target(target, classes, name="target"):
    """None, an int class index, or one int per sample, each in 0..classes-1."""
    if target is None:
        return
    values = np.asarray(target)
    if values.dtype == object or not (is_int(target) or (values.ndim == 1 and np.issubdtype(values.dtype, np.integer))):
        raise TypeError(f"{name} must be a class index (int) or one int per text, got {target!r:.80}")
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise ValueError(f"{name} must be a class index in 0..{classes - 1}, got {target!r:.80}")


def check_token_ids(inputs, vocab_size, name="inputs"):
    """Integer token ids must index the embedding table: 0 <= id < vocab_size (a negative id would
    silently wrap to a row from the end of the table)."""
    if vocab_size is None or isinstance(inputs, str):
        return
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        return   # texts for a model with a TextVectorization layer inside
    ids = np.asarray(inputs)
    if ids.dtype == object or not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
        return   # prepare_ids and the model's own checks name the problem
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"{name}: token id {bad} is outside the vocabulary (ids must be in 0..{vocab_size - 1})")


def check_texts(texts, name="texts"):
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}"
                        + (" (wrap one text in a list: [text])" if isinstance(texts, str) else ""))
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")


def check_labels(labels, count, classes, name="labels"):
    if labels is None:
        return
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) != count or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        raise TypeError(f"{name} must be one int class index per text ({count}), got {labels!r:.80}")
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise ValueError(f"{name} must be class indices in 0..{classes - 1}, got {labels!r:.80}")


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_path(path, name="directory"):
    import os
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str), got {type(path).__name__}")


def check_ig(model, steps, tolerance, baseline, internal_batch_size, reduce):
    """integrated_gradients' arguments, all at once, before any model runs (the quadrature rule
    is checked by integrated_gradients itself, which knows them)."""
    check_model(model)
    check_steps(steps)
    check_tolerance(tolerance)
    check_baseline(baseline)
    check_positive_int(internal_batch_size, "internal_batch_size")
    check_choice(reduce, ("sum", "l2"), "reduce")


def check_split_inputs(split, inputs):
    """Token ids against the vocabulary of the Embedding layer the split attributes at."""
    check_token_ids(inputs, getattr(split.layer, "input_dim", None))


def prepare_ids(token_ids):
    """Token ids as a non-empty int32 [batch, length] array ([L] becomes [1, L]); ValueError otherwise."""
    token_ids = np.asarray(token_ids)
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    if token_ids.ndim != 2 or token_ids.shape[0] == 0 or token_ids.shape[1] == 0:
        raise ValueError(f"token_ids must be a non-empty [batch, length] array, got shape {token_ids.shape}")
    if not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(f"token_ids must be integers, got {token_ids.dtype}")
    return token_ids.astype(np.int32)
