"""LIME and shap as peers of the project's methods, configured to delete characters as evaluate.py does.

Both are optional (`pip install lime`, `pip install shap`); `missing(name)` gives the one-line
message when one is not installed. Each adapter explains strings through `predict` (strings ->
class probabilities [M, C]: re-tokenised with the checkpoint's own tokenizer and run on the
explanations' static-shape graphs) and returns one score per character position, [N, L] like the
project's Attribution.scores, so the same faithfulness code scores every method.

Character deletion, the perturbation evaluate.py measures:
  - LIME (0.2): LimeTextExplainer(split_expression=list, bow=False, mask_string=""): every character
    is one feature at its own position, and a removed feature is replaced by "" (deleted). The default
    splits on non-word characters (Chinese has none between words: a whole clause is one feature),
    bow=True ties all copies of a character together, and the default mask "UNKWORDZ" inserts text.
  - shap (0.51): a one-character tokenizer with offsets and a private-use sentinel as mask token,
    removed (with the space shap puts before every masked stretch) in the prediction function. The
    default Text masker splits Chinese into whole clauses and masks with "..."; mask_token=""
    raises IndexError. shap's masker also collapses runs of whitespace inside the text to one
    space, so texts with several spaces in a row are not deleted exactly. batch_size=50 (shap's
    default is ~2.8x slower at the same result, ../shared/notes/measurements.md).
Texts are cut to the model's maxlen characters first, so that every feature is a position the model sees.
"""
import importlib

import numpy as np

from tig.tokenizer import PAD_ID

PEERS = ("lime", "shap")
LIME_SAMPLES = 2000        # LIME's num_samples
SHAP_EVALS = 500           # shap's max_evals
SHAP_BATCH = 50
SENTINEL = "\ue000"        # private-use character: shap's mask token, deleted before the model sees it


def missing(name):
    """None when peer `name` can be imported, else a one-line message saying how to install it."""
    try:
        importlib.import_module(name)
    except ImportError:
        return f"{name} is not installed: pip install {name} to compare with it"
    return None


def installed():
    """The peers that can be imported."""
    return [name for name in PEERS if missing(name) is None]


def visible_texts(tokenizer, texts, maxlen):
    """Each text as the model sees it: the tokens it keeps of maxlen, joined (char tokenizer only)."""
    from tig.tokenizer import kept
    if getattr(tokenizer, "level", "char") != "char":
        raise ValueError("LIME and shap are compared on characters: they need a character-level tokenizer")
    padding = getattr(tokenizer, "padding", "post")
    return ["".join(kept(tokenizer.tokenize(t), maxlen, padding)) for t in texts]


def lime_scores(predict, texts, target, length, samples=LIME_SAMPLES, seed=0):
    """LIME weights per character position: [N, length], 0 beyond each text."""
    from lime.lime_text import LimeTextExplainer
    explainer = LimeTextExplainer(split_expression=list, bow=False, mask_string="", random_state=seed)
    scores = np.zeros((len(texts), length), np.float32)
    for i, (text, t) in enumerate(zip(texts, target)):
        if not text:
            continue
        explanation = explainer.explain_instance(text, predict, labels=(int(t),), num_features=len(text),
                                                 num_samples=int(samples))
        for position, weight in explanation.as_map()[int(t)]:
            scores[i, position] = weight
    return scores


class CharTokenizer:
    """The tokenizer interface shap's Text masker needs: one token per character, with offsets."""

    def __call__(self, text, return_offsets_mapping=False, **_):
        out = {"input_ids": [ord(c) for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


def without_sentinel(text):
    return text.replace(" " + SENTINEL, "").replace(SENTINEL, "")


def shap_scores(predict, texts, target, length, evals=SHAP_EVALS, batch_size=SHAP_BATCH):
    """shap Partition values per character position for the target class: [N, length]."""
    import shap
    masker = shap.maskers.Text(CharTokenizer(), mask_token=SENTINEL, collapse_mask_token=False)

    def model(strings):
        return predict([without_sentinel(s) for s in strings])
    explainer = shap.Explainer(model, masker, algorithm="partition")
    scores = np.zeros((len(texts), length), np.float32)
    for i, (text, t) in enumerate(zip(texts, target)):
        if not text:
            continue
        values = np.asarray(explainer([text], max_evals=int(evals), batch_size=batch_size, silent=True).values[0])
        scores[i, :len(text)] = values[:len(text), int(t)]
    return scores


def explain_peers(ckpt, texts, token_ids, target, peers, *, lime_samples, shap_evals, seed=0):
    """The same dict as explain_all for LIME and shap (tig/peers.py), explaining the model's own
    function: strings re-tokenised with the checkpoint's tokenizer, run at static shapes."""
    import time
    from tig.attribution import class_scores
    texts = visible_texts(ckpt.tokenizer, texts, ckpt.maxlen)

    def predict(strings):
        return class_scores(ckpt.model, ckpt.tokenizer.encode(list(strings), ckpt.maxlen),
                            layer=ckpt.meta.get("layer"))
    results = {}
    for name in peers:
        began = time.perf_counter()
        if name == "lime":
            scores = lime_scores(predict, texts, target, token_ids.shape[1], lime_samples, seed)
        else:
            scores = shap_scores(predict, texts, target, token_ids.shape[1], shap_evals)
        results[name] = {"scores": np.where(token_ids != PAD_ID, scores, 0.0), "complete": None, "steps": None,
                         "seconds": time.perf_counter() - began}
    return results
