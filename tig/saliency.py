"""Vanilla gradients per token: saliency and gradient x input (the `Attribution` they return: tig/attribution.py).

For a model F (class probabilities, or [1-p, p] for one sigmoid unit, or raw scores) split at
its Embedding layer (tig/embedding_split.py), x = the Embedding layer's output [B,L,D] and target class t:

    saliency:          score_i = || dF_t/dx_i ||_2             (unsigned; times_input=False)
    gradient x input:  score_i = sum_d x_id * dF_t/dx_id        (signed;   times_input=True)

Scores are exactly 0.0 at PAD (id 0) positions: models from tig/model.py zero PAD embeddings
inside the head, so their gradient there is exactly zero, and scores are masked as well.
"""
from tig import validate
from tig.attribution import Attribution, attribution_of, embedded_batch, reduce_scores  # noqa: F401  (Attribution: the API's name)
from tig.deletion import explained_mask
from tig.engine import ENGINE


def gradients(model, inputs, target=None, *, layer=None, times_input=True, reduce=None, vocabulary=None, xla=None):
    """Gradient attributions at the Embedding layer's output.

    model: a model from tig/model.py, any Keras 3 model with an Embedding layer fed by the token
        ids (layer=None finds it; layer="name" or the layer object chooses), or a Split
        (embedding_split.split_at_embedding).
    inputs: int token ids [B,L] (or [L]), or a list of strings for a model with a
        TextVectorization layer inside.
    times_input=True:  signed gradient x input, score_i = sum_d x_id * dF_t/dx_id.
    times_input=False: saliency, score_i = ||dF_t/dx_i||_2 (unsigned, as in Simonyan et al.).
    reduce: "sum" or "l2" over the embedding axis; default "sum" with times_input, else "l2".
    target: class to explain (default: the predicted class), an int or one per sample.
    vocabulary: id -> token list for Attribution.tokens (default: the model's TextVectorization's).
    xla: True/False: jit_compile tig/model.py's models' graphs (and KerasHub tasks' on ids) or not;
        None (default): $TIG_XLA=1/0 if set, else no XLA. Decided by this call alone (tig/engine.py).
    """
    validate.check_model(model)
    split, embeddings, context, token_ids, probs, target = embedded_batch(model, inputs, target, layer, xla)
    grads, output = ENGINE.gradient(split, embeddings, context, target, xla)
    if reduce is None:
        reduce = "sum" if times_input else "l2"
    contributions = grads * embeddings if times_input else grads
    scores = reduce_scores(contributions, explained_mask(token_ids, split.fixed_ids), reduce)
    return attribution_of(split, token_ids, scores, "gradxinput" if times_input else "saliency", vocabulary,
                          target=target, probs=probs, output=output)
