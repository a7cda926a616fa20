"""The result every attribution method returns (`Attribution`), and what the methods share:
the target class, scores reduced over the embedding axis, tokens for display, the model's split
at its embedding (embedding_split.py) and its class scores on the engine's static-shape graphs."""
from dataclasses import dataclass

import numpy as np

from tig import validate
from tig.deletion import explained_mask
from tig.embedding_split import Split, split_at_embedding, verify_split
from tig.engine import ENGINE
from tig.tokenizer import PAD_ID

REDUCTIONS = ("sum", "l2")
VERIFY_ROWS = 8                 # rows of each class_scores call checked against the model's own forward pass
COMPLETENESS_TOLERANCE = 0.01   # an IG explanation is "complete" when |delta| <= 1% of |F(x) - F(x')|


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
        from tig.render import attribution_html
        return attribution_html(self)

    def show(self, names=None, classes=None):
        """For notebooks: the texts as coloured characters with class names, the CJK font embedded.
        names: a checkpoint (its tokenizer and classes: `ig.show(ckpt)`), a tokenizer or a vocabulary
        list; classes: class names. Without names, the tokens the Attribution knows are shown."""
        from tig.render import attribution_explanations
        return attribution_explanations(self, names, classes)


def attribution_of(split, token_ids, scores, method, vocabulary=None, **fields):
    """The one way every method builds its Attribution: scores 0.0 wherever no token is explained (PAD, a
    KerasHub task's [CLS]/[SEP]: deletion.explained_mask), the tokens shown, the model's output kind and the
    layer the scores are taken at. fields: target, probs and the method's own (output, delta, steps, ...)."""
    scores = np.where(explained_mask(token_ids, split.fixed_ids), scores, 0.0).astype(np.float32)
    return Attribution(scores=scores, token_ids=token_ids, method=method,
                       tokens=tokens_of(token_ids, vocabulary or split.vocabulary), output_kind=split.output_kind,
                       layer=getattr(split.layer, "name", None), **fields)


def embedded_batch(model, inputs, target=None, layer=None, xla=None):
    """What the gradient methods do before their own work: the model's split, its embeddings x [B,L,D] of
    the inputs, the head's context and the token ids, the class scores on the engine's graphs (checked
    against the model's own outputs on these inputs: embedding_split.verify_split) and the resolved target.
    Returns (split, x, context, token_ids, probs, target)."""
    split = split_of(model, inputs, layer)
    validate.check_split_inputs(split, inputs)
    x, context, token_ids = split.lookup(inputs)
    probs = ENGINE.outputs(split, x, context, xla)
    verify_split(split, inputs, probs)
    return split, x, context, token_ids, probs, resolve_target(target, probs)


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


def resolve_target(target, probs):
    """None -> predicted class; an int -> that class for every sample; an array -> per sample."""
    batch, classes = probs.shape
    validate.check_target(target, classes)
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


def class_scores(model, inputs, *, layer=None, xla=None, rows_per_call=1024, verify_rows=VERIFY_ROWS):
    """Class scores [N,C] of any model this module explains (softmax probabilities, [1-p, p] for
    one sigmoid unit, or raw scores), on the same static-shape graphs as the explanations;
    inputs are embedded `rows_per_call` at a time so large perturbation sets stay small in memory.
    Like every explanation, each call checks on its first `verify_rows` rows that the
    split gives the model's own outputs (embedding_split.verify_split), or refuses with a one-line error.
    model: a Keras model or a Split (embedding_split.split_at_embedding)."""
    split = split_of(model, inputs[:1] if len(inputs) else inputs, layer)
    parts = []
    for start in range(0, len(inputs), rows_per_call):
        embeddings, context, _ = split.lookup(inputs[start:start + rows_per_call])
        parts.append(ENGINE.outputs(split, embeddings, context, xla))
    scores = np.concatenate(parts)
    verify_split(split, inputs[:verify_rows], scores[:verify_rows])
    return scores


def split_of(model, inputs, layer=None):
    """A Split as given, or the model's (embedding_split.split_at_embedding)."""
    return model if isinstance(model, Split) else split_at_embedding(model, inputs, layer)
