"""Texts in, Explanations out: what visualize.py, serve.py, bench/gallery.py and a notebook show.

    tig.explain(ckpt, ["房间很干净"], "ig")[0]     # in a notebook: the characters coloured, CJK font embedded

Each text is explained by tig.methods.explain_texts (one TextAttribution per text) and laid out for reading
(tig/render.py's Explanation: class names, display units, characters or jieba words). Also the test
samples a command shows (`-n`, `--errors`): the first ones the model gets right, or wrong.
"""
import numpy as np

from tig.defaults import STEPS
from tig.methods import METHODS, NAMES, TEXTS_PER_CALL, canonical, explain_texts, word_sums
from tig.render import Explanation, Explanations


def explain(ckpt, texts, method="ig", *, steps=STEPS, baseline=None, target=None, reduce="sum",
            level="char", labels=None, progress=False):
    """Explain texts with one method (methods.METHODS, or an alias); one Explanation per text, in
    an Explanations list (a notebook displays the list, or one item, with the CJK font embedded).

    ckpt: a checkpoint.Checkpoint or a user_model.UserModel (model, tokenizer, classes, maxlen, meta).
    reduce="l2" gives the original project's unsigned view of integrated gradients. level="word"
    sums character scores per jieba word.
    """
    from tig import validate
    validate.check_texts(texts)
    validate.check_choice(level, ("char", "word"), "level")
    validate.check_choice(method, NAMES, "method")
    validate.check_labels(labels, len(texts), len(ckpt.classes))
    method = canonical(method)
    name = "ig-l2" if (method, reduce) == ("ig", "l2") else method
    bar = None
    if progress and len(texts) > TEXTS_PER_CALL:
        from tig.cli import Progress
        bar = Progress(len(texts), "text")
    out = Explanations()
    for i, r in enumerate(explain_texts(ckpt, texts, method, target=target, steps=steps, baseline=baseline,
                                        reduce=reduce, on_progress=bar.update if bar else None)):
        units, scores, unknown = group_units(r.tokens, r.scores, r.token_ids, ckpt.tokenizer, level)
        out.append(Explanation(
            text="".join(r.tokens), units=units, scores=scores, unknown=unknown, method=name,
            target=ckpt.classes[r.target], predicted=ckpt.classes[r.predicted], prob=float(r.probs[r.predicted]),
            target_prob=float(r.probs[r.target]), label=None if labels is None else ckpt.classes[labels[i]],
            steps=r.steps, delta=r.delta, truncated=r.truncated, signed=METHODS[method].signed,
            baseline=r.baseline, output_kind="probability" if r.output_kind in ("softmax", "sigmoid") else "raw"))
    return out


def group_units(tokens, scores, token_ids, tokenizer, level):
    """Model tokens -> display units; with level="word", char scores are summed per jieba word."""
    from tig.tokenizer import UNK_ID
    unknown = [int(i) == UNK_ID for i in token_ids]
    if level == "char" or getattr(tokenizer, "level", "char") == "word":
        return list(tokens), np.asarray(scores, np.float32), unknown
    words, grouped = word_sums(tokens, scores)
    starts = np.cumsum([0] + [len(w) for w in words])
    return words, np.asarray(grouped, np.float32), [any(unknown[a:b]) for a, b in zip(starts, starts[1:])]


def run_methods(ckpt, texts, methods, *, labels=None, target=None, progress=True, **options):
    """Explain texts with each method; one list per text, one Explanation per method."""
    per_method = [explain(ckpt, texts, m, labels=labels, target=target, progress=progress, **options)
                  for m in methods]
    return [list(group) for group in zip(*per_method)]


def predict_probabilities(ckpt, texts):
    """Class scores [N, C] for texts: one sigmoid unit p becomes [1 - p, p]."""
    from tig.attribution import class_scores
    return class_scores(ckpt.model, ckpt.tokenizer.encode(texts, ckpt.maxlen), layer=ckpt.meta.get("layer"))


def pick_samples(ckpt, task, data_dir, n, errors=False, max_chars=None, balanced=False):
    """The first n test samples (in split order) that the model gets right (or wrong);
    balanced: at most ceil(n / classes) per true class, so a gallery shows several classes."""
    from tig.dataset import load_task
    test = load_task(task, data_dir).test
    cap = -(-n // len(ckpt.classes)) if balanced else n
    chosen_texts, chosen_labels = [], []
    for start in range(0, len(test.texts), 256):
        texts = test.texts[start:start + 256]
        labels = test.labels[start:start + 256]
        pred = predict_probabilities(ckpt, texts).argmax(-1)
        for text, label, p in zip(texts, labels, pred):
            if ((p != label) == errors and (max_chars is None or len(text) <= max_chars)
                    and chosen_labels.count(int(label)) < cap):
                chosen_texts.append(text)
                chosen_labels.append(int(label))
                if len(chosen_texts) == n:
                    return chosen_texts, chosen_labels
    return chosen_texts, chosen_labels
