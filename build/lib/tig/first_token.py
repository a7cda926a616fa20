"""The last encoder layer of a KerasHub classifier, computed for the one token its head reads.

A KerasHub BERT-family text classifier reads a single position of its backbone's last layer:
BertTextClassifier the pooled output (a Dense on position cls_token_index = 0), DistilBERT and
RoBERTa position 0 of the sequence output. Every other position of the last layer is computed
and thrown away. In that layer the query, the attention output, the residuals, the layer norms
and the feed-forward block are per-position, so position 0 alone takes the attention query of
position 0 over the keys and values of every position, and the per-position rest on one row:
the same numbers (to float rounding) at about (2 L d^2) instead of (8 L d^2 + 2 L^2 d) FLOPs for
that layer, forward and backward. On a 2-layer BERT that is ~40% of the work of every
integration step (bench/compare_captum.py measures it).

It is an interception like the embedding's (embedding_split.intercept), on the one layer object,
for the duration of a head call: the model's weights, classes and other instances are untouched;
the Split's check against the model's own forward pass (verify_split) guards every call.
Only for the task classes and the encoder class read here; any other model runs as it is.
"""
from tig.errors import UserError
from tig.keras_compat import merge_padding_and_attention_mask, transformer_encoder_sublayers

# task class name -> the backbone attribute that names the position its head reads
READS_ONE_POSITION = {
    "BertTextClassifier": "cls_token_index",
    "DistilBertTextClassifier": "cls_token_index",
    "RobertaTextClassifier": "start_token_index",
    "XLMRobertaTextClassifier": "start_token_index",
}


def last_layer_reading_first(model):
    """The backbone's last TransformerEncoder if `model` is a KerasHub task whose head reads only
    position 0 of it, else None."""
    import keras_hub
    name = type(model).__name__
    # the class itself, not a subclass or a namesake: another head may read other positions
    if name not in READS_ONE_POSITION or type(model) is not getattr(keras_hub.models, name, None):
        return None
    attribute = READS_ONE_POSITION[name]
    backbone = getattr(model, "backbone", None)
    if backbone is None or getattr(backbone, attribute, None) != 0:
        return None
    layers = getattr(backbone, "transformer_layers", None) or []
    if not layers:
        return None
    from keras_hub.layers import TransformerEncoder
    last = layers[-1]
    return last if type(last) is TransformerEncoder else None


def first_position_call(original, inputs, padding_mask=None, attention_mask=None, training=None,
                        return_attention_scores=False):
    """TransformerEncoder.call for position 0 only: output [B, 1, D] (what the head reads of it).
    `original` (the layer's own call) is unused: the layer's sublayers do the work."""
    if attention_mask is not None or return_attention_scores:
        raise UserError("the first-token path takes a padding mask only (the backbones listed call it so)")
    layer = original.__self__
    parts = transformer_encoder_sublayers(layer)    # its private sublayers (tig/keras_compat.py)
    from keras import ops
    mask = merge_padding_and_attention_mask(inputs, padding_mask, None)     # [B, 1, L] or None
    x = inputs
    residual = x[:, :1]
    if layer.normalize_first:
        x = parts.self_attention_layer_norm(x)
    x = parts.self_attention_layer(query=x[:, :1], value=x, attention_mask=mask, training=training)
    x = parts.self_attention_dropout(x, training=training) + residual
    if not layer.normalize_first:
        x = parts.self_attention_layer_norm(x)
    residual = x
    if layer.normalize_first:
        x = parts.feedforward_layer_norm(x)
    x = parts.feedforward_output_dense(parts.feedforward_intermediate_dense(x))
    x = parts.feedforward_dropout(x, training=training) + residual
    if not layer.normalize_first:
        x = parts.feedforward_layer_norm(x)
    return ops.cast(x, inputs.dtype)
