"""Perturbation attributions on token ids: occlusion, a deletion surrogate and deletion IG, batched natively.

All explain a model F by what happens when characters are *deleted* (tig/deletion.py: the kept tokens
close up and PAD fills the row on the model's padding side, post or pre): exactly what evaluate.py's faithfulness metric does, and, for the character
tokenizer, exactly what re-tokenising the string after removing those characters gives (when no
removal brings a leading or trailing space to the edge of the text, which tokenizer.clean_text would
strip, and the text fits in maxlen; tests/test_peers.py checks the equivalence). No string is
re-tokenised: every perturbed row is built from the ids in NumPy, and all rows of a batch of texts run
through attribution.class_scores, the explanations' static-shape graphs (each row at the bucket of its
own length for tig/model.py's models).

For a text x of n real tokens, target class t and a keep-mask z in {0,1}^n (z_i = 0: token i
deleted), write x_z for the deleted text and f(z) = F_t(x_z).

    occlusion:  score_i = f(1) - f(1 - e_i)          (leave one token out; n rows per text)

    surrogate:  draw K masks z_k (the number of deleted tokens d_k uniform in 1..ceil(max_rate n),
                which ones uniform; LIME draws d_k in 1..n-1), add z = 1, and fit by closed-form
                weighted ridge on g = link(f), the log-odds log(f / (1 - f)) for probabilities
                (link="identity": f itself, as LIME)

                    (b, w) = argmin  sum_k pi_k (g(z_k) - b - w . z_k)^2 + ridge * |w|^2
                    pi_k   = sqrt(exp(-D_k^2 / width^2)),  D_k = 100 * (1 - sqrt(|z_k| / n))

                (D: LIME's cosine distance of z_k to the full text, x100; pi is LIME's kernel, the
                sample weight it gives its Ridge, width 25 its default). score_i = w_i: the change of
                g the local linear model gives to token i's presence.
                Defaults (K = 500, max_rate 0.5, logit link): on 24 hotel char-CNN test texts at
                K = 600, comprehensiveness AOPC was 0.421 with LIME's settings, 0.431 with the logit
                link, 0.435 with the logit link and max_rate 0.5 (a quick check, under load).
                complete=True fits the KernelSHAP way instead: b = g(0) and sum_i w_i = g(1) - g(0)
                exactly (the empty and the full text as constraints), so the scores add up to
                g(x) - g(empty text) and `delta` is 0 up to rounding.

    deletion IG: score_i = mean over K random deletions x_k that keep token i of IG_i(x_k), integrated
                gradients (zero baseline, 2 Gauss-Legendre steps) of F_t on the deleted text, at
                token i's position there; the number of deleted tokens stratified over 1..n-1.
                The most faithful method measured (deletion_ig's docstring, RESULTS.md).

The surrogate is the LIME estimator computed without LIME's string handling, on the model's own
static-shape graphs; it has no completeness unless complete=True (occlusion has none).
For a model linear in the tokens present (a bag of characters with raw outputs) f is linear in z,
and the surrogate with ridge=0 recovers each token's weight exactly (tests/test_peers.py).
"""
import numpy as np

from tig.attribution import attribution_of, class_scores, resolve_target, split_of
from tig.deletion import delete_tokens, explained_positions, padding_side
from tig.validate import prepare_ids

SAMPLES = 500             # K perturbed texts per text (the surrogate)
KERNEL_WIDTH = 25.0       # LIME's LimeTextExplainer default
RIDGE = 1.0               # LIME's default Ridge(alpha=1)
MAX_RATE = 0.5            # at most this share of a text's tokens deleted per sample (LIME: up to n - 1)
LINK = "auto"             # fit F_t itself ("identity", as LIME) or its log-odds log(F_t / (1 - F_t)) ("logit");
LINKS = ("auto", "identity", "logit")  # "auto": logit for probabilities, identity for raw scores
ROWS_PER_CALL = 4096      # perturbed rows embedded per class_scores call


def perturbed_copies(token_ids, positions, make_masks, padding):
    """Per text with n > 0 explained tokens (at `positions`), keep-masks make_masks(n) [K, n] and the rows
    with the masked-out tokens deleted (deletion.delete_tokens). Returns (masks, rows, where each kept token
    moved, per text; owning text per row)."""
    masks, rows, moved, owner = [], [], [], []
    for i, where in enumerate(positions):
        n = len(where)
        keep = make_masks(n) if n else np.zeros((0, 0), bool)
        masks.append(keep)
        if n:
            copies, moves = delete_tokens(token_ids[i], keep, where, padding)
            rows.append(copies)
            moved.append(moves)
            owner += [i] * len(keep)
        else:
            moved.append(None)
    return masks, rows, moved, owner


def target_scores(model, rows, target_per_row, layer=None, xla=None):
    """F_t of each row, in ROWS_PER_CALL slices (static-shape graphs)."""
    out = np.empty(len(rows), np.float64)
    for start in range(0, len(rows), ROWS_PER_CALL):
        probs = class_scores(model, rows[start:start + ROWS_PER_CALL], layer=layer, xla=xla)
        out[start:start + len(probs)] = probs[np.arange(len(probs)), target_per_row[start:start + ROWS_PER_CALL]]
    return out


def _prepare(model, inputs, target, layer, xla, padding):
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        raise ValueError("perturbation methods delete token ids: give int token ids [B, L], not strings")
    token_ids = prepare_ids(inputs)
    split = split_of(model, token_ids, layer)
    probs = class_scores(split, token_ids, xla=xla, verify_rows=len(token_ids))   # every text explained is checked
    positions = explained_positions(token_ids, split.fixed_ids)
    return split, token_ids, probs, resolve_target(target, probs), positions, padding_side(token_ids, padding)


def occlusion(model, inputs, target=None, *, layer=None, vocabulary=None, xla=None, padding=None):
    """Leave-one-token-out: score_i = F_t(x) - F_t(x with token i deleted).

    model, inputs (int token ids [B, L]), target, layer, xla: as tig.gradients.
    padding: the side the model pads on, "post" or "pre" (None: read off the rows, deletion.padding_side);
    a deleted token's place is taken by the tokens after it (post) or before it (pre).
    One row per explained token, all texts' rows run together at static shapes. No completeness.
    Returns an Attribution (method "occlusion").
    """
    split, token_ids, probs, target, positions, padding = _prepare(model, inputs, target, layer, xla, padding)
    rows, owner = [], []
    for i, where in enumerate(positions):
        if len(where):
            rows.append(delete_tokens(token_ids[i], ~np.eye(len(where), dtype=bool), where, padding)[0])
            owner += [i] * len(where)
    scores = np.zeros(token_ids.shape, np.float32)
    output = probs[np.arange(len(target)), target]
    if rows:
        owner = np.array(owner)
        dropped = target_scores(split, np.concatenate(rows), target[owner], xla=xla)
        start = 0
        for i, where in enumerate(positions):
            scores[i, where] = output[i] - dropped[start:start + len(where)]
            start += len(where)
    return attribution_of(split, token_ids, scores, "occlusion", vocabulary, target=target, probs=probs, output=output)


def sample_masks(n, samples, rng, max_rate=1.0):
    """[samples + 1, n] keep-masks: the full text first, then `samples` masks deleting d tokens
    (d uniform in 1..n-1, as LIME draws them, capped at max_rate * n; 1 when n = 1) at positions
    chosen uniformly."""
    if n == 1:
        return np.array([[True]] + [[False]] * samples)
    deleted = rng.integers(1, max(2, min(n, int(np.ceil(max_rate * n)) + 1)), size=samples)
    ranks = rng.random((samples, n)).argsort(1).argsort(1)
    return np.concatenate([np.ones((1, n), bool), ranks >= deleted[:, None]])


def kernel_weights(keep, width=KERNEL_WIDTH):
    """LIME's sample weights: sqrt(exp(-D^2 / width^2)), D = 100 * (1 - sqrt(|z| / n)); width None: all 1."""
    if width is None:
        return np.ones(len(keep))
    distance = 100 * (1 - np.sqrt(keep.sum(1) / keep.shape[1]))
    return np.exp(-distance ** 2 / (2 * width ** 2))


def fit_surrogate(keep, y, weights, ridge=RIDGE):
    """Weighted ridge y ~ b + keep @ w (intercept not penalised), closed form. Returns w [n]."""
    z = keep.astype(np.float64)
    total = weights.sum()
    z_mean, y_mean = weights @ z / total, weights @ y / total
    zc, yc = z - z_mean, y - y_mean
    gram = (zc * weights[:, None]).T @ zc + ridge * np.eye(z.shape[1])
    return np.linalg.lstsq(gram, (zc * weights[:, None]).T @ yc, rcond=None)[0]


def fit_complete(keep, y, weights, f_full, f_empty):
    """Weighted least squares with b = f(0) and sum(w) = f(1) - f(0) (KernelSHAP's constraints):
    the last weight is eliminated, w_n = (f(1) - f(0)) - sum_{i<n} w_i. Returns w [n]."""
    z = keep.astype(np.float64)
    gap = f_full - f_empty
    if z.shape[1] == 1:
        return np.array([gap])
    target = y - f_empty - z[:, -1] * gap
    design = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(weights)[:, None]
    head = np.linalg.lstsq(design * sw, target * sw[:, 0], rcond=None)[0]
    return np.append(head, gap - head.sum())


def linked(values, link, output_kind="softmax"):
    """F_t itself, or its log-odds log(F_t / (1 - F_t)) (probabilities only, clipped to [1e-6, 1 - 1e-6])."""
    if link == "auto":
        link = "logit" if output_kind in ("softmax", "sigmoid") else "identity"
    if link == "identity":
        return values
    if output_kind not in ("softmax", "sigmoid"):
        raise ValueError("link='logit' needs probabilities; this model's outputs are raw scores")
    p = np.clip(values, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def deletion_surrogate(model, inputs, target=None, *, samples=SAMPLES, width=KERNEL_WIDTH, ridge=RIDGE,
                       max_rate=MAX_RATE, link=LINK, complete=False, seed=0, layer=None, vocabulary=None, xla=None,
                       padding=None):
    """A LIME-style local linear surrogate of F_t under token deletion, computed natively.

    For each text (n real tokens): K = `samples` keep-masks z_k (d_k ~ U{1..ceil(max_rate n)} tokens
    deleted, chosen uniformly) plus the full text; f(z) = F_t(text with the z = 0 tokens deleted, kept
    ones shifted left) for all rows of all texts in large static-shape batches; g = link(f); per text

        w = argmin_{b,w} sum_k pi_k (g(z_k) - b - w . z_k)^2 + ridge |w|^2,
        pi_k = sqrt(exp(-D_k^2 / width^2)),  D_k = 100 (1 - sqrt(|z_k| / n))      (LIME's kernel)

    and score_i = w_i. link: "auto" (log-odds log(f / (1 - f)) for probabilities, f for raw scores),
    "logit" or "identity" (LIME's choice). width=None: all samples weigh the same.
    complete=True: b = g(empty), sum_i w_i = g(full) - g(empty) exactly (the KernelSHAP
    constraints; `delta`, `output` and `baseline_output` are then in g's units, baseline "empty text").
    No completeness otherwise.

    model, inputs (int token ids [B, L]), target, layer, xla: as tig.gradients.
    seed: the masks' random generator (one per call; the same seed gives the same scores).
    Returns an Attribution (method "surrogate").
    """
    if int(samples) < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, got {link!r}")
    split, token_ids, probs, target, positions, padding = _prepare(model, inputs, target, layer, xla, padding)
    rng = np.random.default_rng(seed)
    masks, rows, _, owner = perturbed_copies(token_ids, positions, lambda n: sample_masks(n, int(samples), rng, max_rate),
                                             padding)
    output = probs[np.arange(len(target)), target]
    fx = linked(output, link, split.output_kind)
    empty = None
    if complete:
        nothing = np.concatenate([delete_tokens(row, np.zeros((1, len(where)), bool), where, padding)[0]
                                  for row, where in zip(token_ids, positions)])   # every explained token deleted
        empty = linked(target_scores(split, nothing, target, xla=xla), link, split.output_kind)
    scores = np.zeros(token_ids.shape, np.float32)
    if rows:
        y_all = linked(target_scores(split, np.concatenate(rows), target[np.array(owner)], xla=xla), link,
                       split.output_kind)
        start = 0
        for i, where in enumerate(positions):
            if not len(where):
                continue
            keep = masks[i]
            y = y_all[start:start + len(keep)]
            start += len(keep)
            weights = kernel_weights(keep, width)
            w = (fit_complete(keep, y, weights, fx[i], empty[i]) if complete
                 else fit_surrogate(keep, y, weights, ridge))
            scores[i, where] = w
    extra = {}
    if complete:
        extra = dict(delta=(fx - empty) - scores.astype(np.float64).sum(1), baseline="empty text",
                     baseline_output=empty)   # in the link's units, as `output` below
    return attribution_of(split, token_ids, scores, "surrogate", vocabulary, target=target, probs=probs,
                          output=fx if complete else output, **extra)


DELETION_SAMPLES = 100    # random deletion contexts per text (deletion_ig)
DELETION_STEPS = 2        # Gauss-Legendre IG steps in each context
DELETION_MAX_RATE = 1.0   # contexts delete d tokens, d stratified over 1..min(n - 1, ceil(max_rate n))
DELETION_ROWS_PER_CALL = 512   # deleted texts embedded at a time (their embeddings and gradients in memory)


def stratified_masks(n, samples, rng, max_rate=DELETION_MAX_RATE):
    """[samples + 1, n] keep-masks: the full text first, then `samples` masks deleting d_k tokens at
    uniformly chosen positions, the counts stratified over 1..hi (hi = min(n - 1, ceil(max_rate n))):
    d_k = 1 + floor(u_k hi), u_k = (k + U_k) / samples, in shuffled order (every count range gets
    its share, unlike independent draws). n = 1: the full text only (deleting it leaves nothing)."""
    if n <= 1:
        return np.ones((1, n), bool)
    hi = max(1, min(n - 1, int(np.ceil(max_rate * n))))
    u = (np.arange(samples) + rng.random(samples)) / samples
    deleted = np.minimum(hi, 1 + np.floor(u * hi).astype(int))
    rng.shuffle(deleted)
    ranks = rng.random((samples, n)).argsort(1).argsort(1)
    return np.concatenate([np.ones((1, n), bool), ranks >= deleted[:, None]])


def spread_back(moved, row_scores):
    """Per-row scores of deleted texts [K, L] back at the original explained positions: [K, n], token j's
    score in copy k taken where it moved (deletion.delete_tokens), 0 where it was deleted."""
    rows = np.arange(len(moved))[:, None]
    return np.where(moved >= 0, row_scores[rows, np.maximum(moved, 0)], 0.0)


def deletion_ig(model, inputs, target=None, *, samples=DELETION_SAMPLES, steps=DELETION_STEPS,
                max_rate=DELETION_MAX_RATE, seed=0, layer=None, vocabulary=None, xla=None, padding=None):
    """Integrated gradients averaged over random deletion contexts ("deletion IG").

    For each text x (n real tokens): K = `samples` keep-masks z_k (d_k tokens deleted at uniform
    positions, d_k stratified over 1..min(n - 1, ceil(max_rate n))) plus z_0 = the full text; x_k =
    x with the z_k = 0 tokens deleted (kept ones shifted left, as the faithfulness metric deletes).
    IG_j(x_k) = integrated gradients of F_t on x_k, zero baseline, `steps` Gauss-Legendre points;
    and per token

        score_i = sum_{k: z_ki = 1} IG_{pos_k(i)}(x_k) / #{k: z_ki = 1}

    (pos_k(i): token i's position in x_k): the mean of token i's IG over the contexts that keep it.
    With d_k spread evenly over the sizes, this is a Shapley-style average of the token's
    contribution over coalitions of every size, each contribution measured by IG (whose path to the
    zero embedding handles the saturation that a single gradient misses) rather than by one forward
    pass per coalition, so one context gives n numbers where LIME's sample gives one.
    Each context's IG is complete for that context (sum_j IG_j(x_k) = F_t(x_k) - F_t(0) up to the
    quadrature error of `steps` points); the average is not complete for x: no completeness.

    Defaults (K = 100 contexts, 2 steps, max_rate 1: 101 x 2 gradient rows per text, no forward
    rows: the engine's path integral alone, without integrated_gradients' per-row F(x), F(0) and split check,
    which cost about as much again), measured with evaluate.py's comprehensiveness AOPC on the first
    24 hotel test texts (runs/exp, RESULTS.md; LIME-2000 0.467 on the char-CNN, 0.422 on the transformer):
      char-CNN:    K = 100: 0.467, 0.467, 0.469 (seeds 0-2); K = 50: 0.469, 0.459; K = 200: 0.472;
                   4 steps x 100: 0.470, 0.464; IG (50 steps, whole text) 0.389;
      transformer: K = 50: 0.426, 0.430, 0.427; K = 100: 0.428; IG 0.414; 0.17-0.19 s/text at K = 50
                   where the deletion surrogate (500 samples) took 0.61 and LIME-2000 about 2.
    Measured alternatives (same texts): 1 step (the gradient at the path's midpoint) matches on the
    CNN (0.467) but not on the transformer (0.419-0.423 at K = 100); plain gradient x input in each
    context, in log-odds units, the same on the CNN (0.470) and 0.418 on the transformer; contexts
    deleting at most half the text lose the large-deletion bins (CNN 0.445-0.450), max_rate 0.75
    0.466; weighting contexts by LIME's kernel (width 50) 0.468; disjoint same-size context pairs
    0.464; the deletion surrogate with this method or averaged gradient x input as its ridge prior,
    or z-scored sums of the two, no better than this method alone (0.383-0.471). On the first 100
    validation texts (CNN): 0.520, 0.516 (seeds 0, 1) vs LIME-2000 0.520; weighting the contexts by
    their kept share or by LIME's kernel 0.508-0.518.
    evaluate.py -n 100 --methods all (first 100 test texts, RESULTS.md): char-CNN 0.491 vs LIME-2000
    0.492 at 0.12x its seconds per text (level, not above); transformer 0.425 vs 0.418 at 0.16x; retrained
    checkpoints: 0.484 vs 0.486 (0.17x) and 0.464 vs 0.467 (0.19x), where erasure.greedy_erasure reaches
    0.521 and 0.497.

    model, inputs (int token ids [B, L]), target, layer, xla: as tig.gradients.
    seed: the masks' random generator (one per call; the same seed gives the same scores).
    Returns an Attribution (method "deletion-ig").
    """
    from tig.engine import ENGINE
    from tig.attribution import reduce_scores
    from tig.ig import integrate, quadrature
    if int(samples) < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    split, token_ids, probs, target, positions, padding = _prepare(model, inputs, target, layer, xla, padding)
    rng = np.random.default_rng(seed)
    masks, rows, moved, owner = perturbed_copies(token_ids, positions,
                                                 lambda n: stratified_masks(n, int(samples), rng, max_rate), padding)
    scores = np.zeros(token_ids.shape, np.float32)
    if rows:
        rows, owner = np.concatenate(rows), np.array(owner)
        nodes, weights = quadrature("gausslegendre", int(steps))
        parts = []
        for start in range(0, len(rows), DELETION_ROWS_PER_CALL):
            # integrated_gradients' path integral alone (x' = 0): its extra forward passes (F(x), F(0) and the
            # split check against the model, per row) would cost about as much again
            x, context, ids = split.lookup(rows[start:start + DELETION_ROWS_PER_CALL])
            part = owner[start:start + len(x)]
            contributions = integrate(
                lambda x, x0, nodes, weights: ENGINE.path_gradient(split, x, x0, np.asarray(context), target[part],
                                                                   nodes, weights, xla=xla),
                x, np.zeros_like(x), nodes, weights)
            parts.append(reduce_scores(contributions, ~np.isin(ids, split.fixed_ids), "sum"))
        row_scores = np.concatenate(parts).astype(np.float64)
        start = 0
        for i, where in enumerate(positions):
            if not len(where):
                continue
            keep = masks[i]
            placed = spread_back(moved[i], row_scores[start:start + len(keep)])
            start += len(keep)
            scores[i, where] = placed.sum(0) / keep.sum(0)
    return attribution_of(split, token_ids, scores, "deletion-ig", vocabulary, target=target, probs=probs,
                          output=probs[np.arange(len(target)), target])
