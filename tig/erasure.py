"""Greedy erasure: the characters whose deletion, one after another, lowers the prediction most.

Li, Monroe & Jurafsky (2016, "Understanding neural networks through representation erasure") explain a
prediction by what erasing parts of the input does to it. Done exhaustively, finding the k characters
whose deletion lowers F_t most is a search over subsets; done greedily, step k deletes the character
whose deletion (after the k - 1 already chosen) lowers F_t most, which costs n forward passes per step.
Here the candidates at each step are the `candidates` remaining characters that deletion IG
(perturbation.deletion_ig) ranks first, so a step costs `candidates` forward passes, and deletion IG
orders the characters the search does not reach:

    S_0 = {},  S_k = S_{k-1} + {argmax over c in C_k of  F_t(x - S_{k-1}) - F_t(x - S_{k-1} - c)}
    C_k = the `candidates` characters not in S_{k-1} with the largest deletion IG scores
    drop_k = F_t(x - S_{k-1}) - F_t(x - S_k)          (measured: one forward pass of the deleted text)

(x - S: the text with those characters deleted, the rest shifted left, as evaluate.py deletes.) The
search runs ceil(share n) steps. A step's best deletion may raise F_t (drop_k <= 0: no candidate lowers
it), yet open the way to a larger drop later (on the hotel transformer, stopping there instead lost
0.015 comprehensiveness on the validation texts); such characters are scored as a group with the ones
after them, up to the first point where their deletions together lower F_t. Scores, in F_t's units:

    value(character in group G) = (F_t before G's deletions - F_t after them) / |G|     (> 0)
    score(chosen characters)     = their values made non-increasing in the deletion order by pooling
                                   (a run that rises is replaced by its mean: least squares, sum kept)
    score(any other character)   = its deletion IG score, capped below the last chosen one

(a last group whose deletions never lower F_t is not chosen: deletion IG orders it with the rest; ties
are broken one float32 step down, in the deletion order). So the scores' order is the order of the
deletions (a later drop can exceed an earlier one, e.g. once two characters that stand in for each other
are both gone, or when F_t is saturated), and the chosen characters' scores add up to
F_t(x) - F_t(x - S) for the S they form (up to float32 steps). No completeness for the whole text.

Cost per text: deletion IG (its 100 contexts x 2 gradient rows) plus at most ceil(share n) x
`candidates` forward rows, all texts of a batch together at static shapes; the steps run one after
another (each depends on the last). The defaults (share 0.2, 8 candidates) were chosen on the hotel
validation texts, never on the test texts evaluate.py reports (RESULTS.md: "How greedy erasure was chosen").
"""
import math
from dataclasses import replace

import numpy as np

from tig.attribution import split_of
from tig.deletion import delete_tokens, explained_positions, padding_side
from tig.perturbation import deletion_ig, target_scores

SHARE = 0.2         # search the first ceil(SHARE * n) deletions; deletion IG orders the rest
CANDIDATES = 8      # characters tried per step: the remaining ones deletion IG ranks first


def search_budget(lengths, share):
    """Deletions searched per text: ceil(share n), at most n - 1 (one character always stays)."""
    return np.array([min(max(n - 1, 0), math.ceil(share * n)) for n in lengths], int)


def greedy_order(split, token_ids, target, guide, start, budget, candidates, positions, padding, xla=None):
    """Per text, the characters the greedy search deletes (indices into its explained `positions`), in
    order, and each one's measured drop. guide: per text, scores [n] ranking the candidates; start: F_t of
    each full text; padding: the model's side (deletion.delete_tokens)."""
    deleted = [np.zeros(len(where), bool) for where in positions]
    current = np.asarray(start, np.float64).copy()
    chosen = [[] for _ in token_ids]
    drops = [[] for _ in token_ids]
    searching = budget > 0
    while searching.any():
        rows, owner, tried = [], [], []
        for i in np.flatnonzero(searching):
            alive = np.flatnonzero(~deleted[i])
            picked = alive[np.argsort(-guide[i][alive], kind="stable")[:candidates]]
            keep = np.tile(~deleted[i], (len(picked), 1))     # one row per candidate, it deleted too
            keep[np.arange(len(picked)), picked] = False
            rows.append(delete_tokens(token_ids[i], keep, positions[i], padding)[0])
            owner += [i] * len(picked)
            tried += list(picked)
        owner, tried = np.array(owner), np.array(tried)
        after = target_scores(split, np.concatenate(rows), target[owner], xla=xla)
        for i in np.flatnonzero(searching):
            mine = np.flatnonzero(owner == i)
            best = mine[np.argmin(after[mine])]
            deleted[i][tried[best]] = True
            chosen[i].append(int(tried[best]))
            drops[i].append(float(current[i] - after[best]))
            current[i] = after[best]
            searching[i] = len(chosen[i]) < budget[i]
    return chosen, drops


def grouped_drops(chosen, drops):
    """The chosen characters as groups: a character whose deletion did not lower F_t joins the ones
    after it until their deletions together do; each member's value is the group's drop over its size.
    A last group that never lowers F_t is left out. Returns (characters, values) in deletion order."""
    characters, values, group, total = [], [], [], 0.0
    for c, drop in zip(chosen, drops):
        group.append(c)
        total += drop
        if total > 0:
            characters += group
            values += [total / len(group)] * len(group)
            group, total = [], 0.0
    return characters, values


def pooled_nonincreasing(values):
    """The non-increasing sequence closest to `values` in least squares (pool adjacent violators):
    a run of values that rises is replaced by its mean, so the sum is kept."""
    blocks = []                             # [sum, count] per pooled run
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] < blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(count)]


def ordered_scores(guide, n, chosen, drops):
    """One text's scores [n]: the chosen characters' (grouped) drops made non-increasing in the deletion
    order (pooled, their sum kept), then the others' guide scores capped below the last of them; each
    score at least one float32 step below the one before, so the scores sort in the deletion order."""
    scores = guide[:n].astype(np.float32).copy()
    cap = np.float32(np.inf)
    characters, values = grouped_drops(chosen, drops)
    values = pooled_nonincreasing(values)
    for c, value in zip(characters, values):
        scores[c] = cap = min(np.float32(value), np.nextafter(cap, np.float32(-np.inf)))
    if characters:
        rest = np.setdiff1d(np.arange(n), characters)
        for c in rest[np.argsort(-scores[rest], kind="stable")]:
            if scores[c] < cap:
                break                       # sorted: the rest are below the cap already
            scores[c] = cap = np.nextafter(cap, np.float32(-np.inf))
    return scores


def greedy_erasure(model, inputs, target=None, *, share=SHARE, candidates=CANDIDATES, samples=None, seed=0,
                   layer=None, vocabulary=None, xla=None, padding=None):
    """Greedy erasure guided by deletion IG (the module docstring has the definition).

    model, inputs (int token ids [B, L]), target, layer, xla: as gradients.gradients.
    share: the share of each text's characters the greedy search deletes (the rest: deletion IG's order);
    candidates: characters tried per step; samples, seed: deletion IG's contexts and their generator.
    Returns an Attribution (method "greedy-erasure"); no completeness.
    """
    if not 0 <= float(share) <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if int(candidates) < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    guide = deletion_ig(model, inputs, target, seed=seed, layer=layer, vocabulary=vocabulary, xla=xla, padding=padding,
                        **({} if samples is None else {"samples": samples}))
    token_ids, target = guide.token_ids, guide.target          # checked and resolved by deletion IG
    split = split_of(model, token_ids, layer)                  # the Split deletion IG used (cached on the model)
    positions = explained_positions(token_ids, split.fixed_ids)
    guides = [guide.scores[i, where] for i, where in enumerate(positions)]
    chosen, drops = greedy_order(split, token_ids, target, guides, guide.output,
                                 search_budget([len(where) for where in positions], float(share)), int(candidates),
                                 positions, padding_side(token_ids, padding), xla=xla)
    scores = np.zeros(token_ids.shape, np.float32)
    for i, where in enumerate(positions):
        scores[i, where] = ordered_scores(guides[i], len(where), chosen[i], drops[i])
    return replace(guide, scores=scores, method="greedy-erasure")
