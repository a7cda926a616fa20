"""Every private Keras and KerasHub API this project uses, in one place: a Keras or KerasHub release
that changes one of them breaks this module (tests/test_keras_compat.py exercises each function on
real layers), not the modules that explain, load or train models.

Each function below uses something that has no public replacement. All were checked against
keras 3.15.1 and keras-hub 0.32.x (TensorFlow backend); the comment on each says why it is needed.

What did have a public replacement uses it where it is needed, not here: model.inputs
(embedding_split.intercepted_split), Functional.input, .outputs and .operations (model_io),
and SparseAdam's own slots made with add_variable_from_reference (model.py).
"""
from types import SimpleNamespace

# --- Keras masks on tensors -----------------------------------------------------------

def get_keras_mask(tensor):
    """The Keras mask a layer attached to `tensor` (None if none).

    Needed by embedding_split.path_point: KerasHub's ReversibleEmbedding sets its mask inside
    `call` (not compute_mask), so a replaced `call` must copy it from the original's output.
    Keras 3 has no public getter (it is the tensor's `_keras_mask`); keras.src.backend has one.
    Checked: keras 3.15.1, keras-hub 0.32.x."""
    from keras.src.backend import get_keras_mask as get
    return get(tensor)


def set_keras_mask(tensor, mask):
    """Attach a Keras mask to `tensor` (what Layer.__call__ does with compute_mask's result).

    Needed by embedding_split.path_point, so the layers after an intercepted Embedding see the
    same padding mask as in the model's own forward pass. No public setter in Keras 3.
    Checked: keras 3.15.1, keras-hub 0.32.x."""
    from keras.src.backend import set_keras_mask as set_
    set_(tensor, mask)


# --- replacing `call` on one layer object -----------------------------------------------

def replace_call(layer, fn):
    """Make `layer.call` (on this one object: its class and other instances untouched) run
    fn(original_call, *args, **kwargs); returns what restore_call needs to put it back.

    Needed by embedding_split.intercept (the Embedding layer returns the integration path's points;
    first_token runs the last encoder layer for one position). It relies on Keras 3's
    Layer.__call__ looking `call` up on the instance on every call, after it has decided from the
    class's own `call` signature which arguments (training, mask) to pass; Keras has no public hook
    for that. object.__setattr__ keeps the function out of Keras' attribute tracking.
    Checked: keras 3.15.1, keras-hub 0.32.x (ReversibleEmbedding, TransformerEncoder)."""
    own = layer.__dict__.get("call")     # normally absent: `call` comes from the class
    original = layer.call
    object.__setattr__(layer, "call", lambda *a, _fn=fn, _orig=original, **k: _fn(_orig, *a, **k))
    return own


def restore_call(layer, own):
    """Undo replace_call(layer, ...): `own` is what it returned."""
    if own is None:
        object.__delattr__(layer, "call")
    else:
        object.__setattr__(layer, "call", own)


# --- every layer of a model ---------------------------------------------------------------

def nested_layers(model):
    """Every layer inside `model`, recursively (sub-models, and the sublayers that layers such as
    KerasHub's TokenAndPositionEmbedding or TransformerEncoder keep as attributes), in Keras'
    tracking order, without `model` itself.

    Needed to find a model's Embedding, TextVectorization and position-embedding layers wherever
    they are nested (embedding_split.all_layers, user_model.position_capacity). model.layers lists
    only the top level, and sublayers kept as attributes of a layer have no public list in Keras 3;
    Layer._flatten_layers is what Keras itself uses. Checked: keras 3.15.1, keras-hub 0.32.x."""
    return model._flatten_layers(include_self=False, recursive=True)


# --- fit() under MultiWorkerMirroredStrategy (keras-team/keras#20585) ------------------------

def build_from_local_batch(model, strategy, sample_batch):
    """Build `model` (its metrics and optimizer too) from a local batch, inside `strategy`'s scope,
    and stop fit() from building it again from the first distributed batch.

    Needed by distribute.build_before_fit: under MultiWorkerMirroredStrategy, Keras 3's fit() learns
    the input shapes by all-reducing the first (integer) batch across workers, which fails
    (keras-team/keras#20585). Model._symbolic_build is the build fit() would run; replacing
    _maybe_symbolic_build with a no-op skips fit()'s own. No public API builds a model, its compiled
    metrics and its optimizer together. Checked: keras 3.15.1."""
    with strategy.scope():
        model._symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None   # already built


# --- KerasHub's TransformerEncoder, one position at a time ----------------------------------

def merge_padding_and_attention_mask(inputs, padding_mask, attention_mask):
    """KerasHub's own merge of a padding mask [B, L] (and/or an attention mask) into the attention
    mask [B, 1, L] its TransformerEncoder passes to MultiHeadAttention (None if neither).

    Needed by first_token.first_position_call, which recomputes TransformerEncoder.call for one
    position and must mask exactly as the layer does; keras_hub exports no public equivalent.
    Checked: keras-hub 0.32.x (keras_hub.src.layers.modeling.transformer_layer_utils)."""
    from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask as merge
    return merge(inputs, padding_mask, attention_mask)


ENCODER_SUBLAYERS = ("self_attention_layer", "self_attention_layer_norm", "self_attention_dropout",
                     "feedforward_layer_norm", "feedforward_intermediate_dense", "feedforward_output_dense",
                     "feedforward_dropout")


def transformer_encoder_sublayers(layer):
    """The sublayers of a KerasHub TransformerEncoder, by name without the leading underscore
    (self_attention_layer, ..., feedforward_dropout: ENCODER_SUBLAYERS).

    Needed by first_token.first_position_call, which runs them itself, for the attention query of
    position 0 only; TransformerEncoder keeps them as private attributes (_self_attention_layer,
    ...) with no public accessor. Checked: keras-hub 0.32.x (keras_hub.layers.TransformerEncoder,
    built: the sublayers exist once the layer has been called or built)."""
    return SimpleNamespace(**{name: getattr(layer, "_" + name) for name in ENCODER_SUBLAYERS})
