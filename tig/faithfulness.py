"""Faithfulness of an explanation (ERASER, DeYoung et al. 2020): delete the characters it ranks highest and
see how much the explained class's probability falls.

For a text x, its explained tokens ranked by score, the top k% removed (x minus top) or kept alone (top):

    comprehensiveness_k = F_t(x) - F_t(x minus top_k%)      (higher: the top tokens mattered)
    sufficiency_k       = F_t(x) - F_t(top_k% alone)        (lower: the top tokens suffice)

averaged over k in KS (AOPC), with the log-odds at 20% and the deletion curve. Removal deletes the tokens
(tig/deletion.py: the others close up, PAD on the model's own side) or replaces them with PAD or UNK.
evaluate.py runs it for every method; bench/choose_erasure.py uses the same function.
"""
import math

import numpy as np

from tig.deletion import delete_tokens, explained_mask, padding_side
from tig.tokenizer import PAD_ID

KS = (1, 5, 10, 20, 50)               # percent of tokens, as in ERASER
CURVE = tuple(np.round(np.linspace(0, 1, 11), 2))
REMOVALS = ("delete", "pad", "unk")


def ranking(scores, mask):
    """Real positions ordered from most to least supporting (stable for ties)."""
    real = np.flatnonzero(mask)
    return real[np.argsort(-scores[real], kind="stable")]


def top_count(n_tokens, percent):
    return min(n_tokens, max(1, math.ceil(n_tokens * percent / 100)))


def perturb(token_ids, positions, removal="delete", keep=False, fixed=(PAD_ID,), padding="post"):
    """Remove the tokens at `positions` (or keep only them), never those with a `fixed` id (padding; a
    KerasHub tokenizer's [CLS], [SEP]): a row of the same length. delete: deletion.delete_tokens, PAD on
    the model's `padding` side; pad / unk: the removed tokens replaced in place."""
    from tig.tokenizer import UNK_ID
    chosen = np.zeros(len(token_ids), bool)
    chosen[positions] = True
    explained = explained_mask(token_ids, fixed)
    drop = (~chosen if keep else chosen) & explained
    if removal == "delete":
        where = np.flatnonzero(explained)
        return delete_tokens(token_ids, ~drop[where][None], where, padding)[0][0]
    if removal in ("pad", "unk"):
        out = token_ids.copy()
        out[drop] = PAD_ID if removal == "pad" else UNK_ID
        return out
    raise ValueError(f"unknown removal {removal!r}; choose from: {', '.join(REMOVALS)}")


def faithfulness(predict, token_ids, scores, target, removal="delete", ks=KS, curve=CURVE, fixed=(PAD_ID,),
                 padding=None):
    """Comprehensiveness, sufficiency, log-odds and the deletion curve for one method.

    predict: ids [M,L] -> probabilities [M,C]. scores: [N,L]. target: [N] explained class.
    fixed: ids that are never ranked nor removed (padding, and a KerasHub task's special tokens).
    padding: the model's padding side, "post" or "pre" (None: read off the rows, deletion.padding_side).
    """
    n = len(token_ids)
    padding = padding_side(token_ids, padding)
    mask = explained_mask(token_ids, fixed)
    rows, index = [], {}
    for i in range(n):
        order = ranking(scores[i], mask[i])
        length = len(order)
        for k in ks:
            top = order[:top_count(length, k)]
            index[("comp", k, i)] = len(rows)
            rows.append(perturb(token_ids[i], top, removal, fixed=fixed, padding=padding))
            index[("suff", k, i)] = len(rows)
            rows.append(perturb(token_ids[i], top, removal, keep=True, fixed=fixed, padding=padding))
        for f in curve:
            index[("curve", f, i)] = len(rows)
            rows.append(perturb(token_ids[i], order[:int(round(f * length))], removal, fixed=fixed,
                               padding=padding))
    probs = predict(np.stack(rows))
    full = predict(token_ids)[np.arange(n), target]

    def p(kind, key):
        return np.array([probs[index[(kind, key, i)], target[i]] for i in range(n)])

    comp = {k: float(np.mean(full - p("comp", k))) for k in ks}
    suff = {k: float(np.mean(full - p("suff", k))) for k in ks}
    removed20 = np.clip(p("comp", 20), 1e-12, 1.0)
    deletion = [float(np.mean(p("curve", f))) for f in curve]
    return {
        "comprehensiveness_aopc": float(np.mean(list(comp.values()))), "comprehensiveness_20": comp[20],
        "sufficiency_aopc": float(np.mean(list(suff.values()))), "sufficiency_20": suff[20],
        "log_odds_20": float(np.mean(np.log(removed20) - np.log(np.clip(full, 1e-12, 1.0)))),
        "deletion_auc": float(np.trapezoid(deletion, curve)), "deletion_curve": deletion,
        "comprehensiveness": comp, "sufficiency": suff,
    }


def top_token_agreement(scores, reference, mask):
    """Share of texts whose highest-scoring token is the same under both score arrays."""
    low = np.where(mask, 0.0, -np.inf)
    return float(np.mean(np.argmax(scores + low, 1) == np.argmax(reference + low, 1)))
