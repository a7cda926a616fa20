"""Attribution methods by name, and the one way to explain texts with one of them.

    attribute(model, token_ids, "ig", steps=50)      # one batch -> an Attribution (tig/attribution.py)
    explain_texts(ckpt, texts, "ig")                 # texts -> one TextAttribution per text

Every script (visualize.py, explain.py, evaluate.py, bench/gallery.py) and the notebook display take
method names from METHODS, with the same aliases (ALIASES: "grad" is gradient x input). What
each computes is in its own module; this file only dispatches, encodes texts, lines scores up
with the tokens a reader sees and sums them per jieba word. It imports no TensorFlow until a
method runs, so command lines can list the methods in --help quickly.
"""
from dataclasses import dataclass

import numpy as np

from tig.defaults import STEPS
from tig.render import METHOD_TITLES

TEXTS_PER_CALL = 32     # texts explained per attribution call


@dataclass(frozen=True)
class Method:
    signed: bool         # scores have a sign (saliency's norms do not)
    ids_only: bool       # deletes token ids: needs a model that takes ids, not strings
    complete: bool       # scores add up to F(x) - F(x') (integrated gradients)
    module: str          # where it is computed


METHODS = {
    "ig": Method(signed=True, ids_only=False, complete=True, module="tig/ig.py"),
    "gradxinput": Method(signed=True, ids_only=False, complete=False, module="tig/saliency.py"),
    "saliency": Method(signed=False, ids_only=False, complete=False, module="tig/saliency.py"),
    "occlusion": Method(signed=True, ids_only=True, complete=False, module="tig/perturbation.py"),
    "surrogate": Method(signed=True, ids_only=True, complete=False, module="tig/perturbation.py"),
    "deletion-ig": Method(signed=True, ids_only=True, complete=False, module="tig/perturbation.py"),
    "greedy-erasure": Method(signed=True, ids_only=True, complete=False, module="tig/erasure.py"),
}
ALIASES = {"grad": "gradxinput"}
NAMES = tuple(METHODS) + tuple(ALIASES)     # what a --method flag accepts
assert set(METHODS) <= set(METHOD_TITLES), "every method has a title (render.METHOD_TITLES)"


def canonical(name):
    """A method name or alias -> the method's name; ValueError for anything else."""
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(NAMES)}")
    return name


def describe():
    """One line for --help: every name with its title."""
    return "; ".join(f"{name} ({METHOD_TITLES[name]})" for name in METHODS) + \
        "; " + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items())


def attribute(model, inputs, method, *, target=None, layer=None, steps=STEPS, baseline=None, reduce="sum",
              samples=None, seed=0, xla=None, padding=None):
    """One batch of inputs (token ids, or texts for a string-input model) -> Attribution.

    steps, baseline, reduce: integrated gradients' (reduce also gradient x input's);
    samples, seed: the deletion surrogate's (seed also deletion IG's and greedy erasure's); padding: the side the
    model pads on, for the methods that delete tokens (tig/deletion.py). Other options are ignored by methods
    without them."""
    method = canonical(method)
    if METHODS[method].ids_only and isinstance(inputs, (list, tuple)):
        from tig.errors import UserError
        raise UserError(f"--method {method} deletes token ids: it needs a model that takes token ids")
    if method == "ig":
        from tig.ig import DEFAULT_BASELINE, integrated_gradients
        return integrated_gradients(model, inputs, target, layer=layer, baseline=baseline or DEFAULT_BASELINE,
                                    steps=steps, reduce=reduce, xla=xla)
    if method in ("gradxinput", "saliency"):
        from tig.saliency import gradients
        times_input = method == "gradxinput"
        return gradients(model, inputs, target, layer=layer, times_input=times_input,
                         reduce=reduce if times_input else None, xla=xla)
    if method == "greedy-erasure":
        from tig.erasure import greedy_erasure
        return greedy_erasure(model, inputs, target, layer=layer, seed=seed, xla=xla, padding=padding)
    from tig import perturbation
    if method == "occlusion":
        return perturbation.occlusion(model, inputs, target, layer=layer, xla=xla, padding=padding)
    if method == "deletion-ig":
        return perturbation.deletion_ig(model, inputs, target, layer=layer, seed=seed, xla=xla, padding=padding)
    return perturbation.deletion_surrogate(model, inputs, target, layer=layer, seed=seed, xla=xla, padding=padding,
                                           **({} if samples is None else {"samples": samples}))


# --- texts ----------------------------------------------------------------------------------

@dataclass
class TextAttribution:
    """One text explained: the model's tokens of it (up to maxlen) and their scores, lined up."""
    text: str                    # the text as read (cut to dataset.MAX_TEXT_CHARS)
    tokens: list                 # the tokens the model saw
    scores: np.ndarray           # one per token
    token_ids: np.ndarray        # one per token
    truncated: int               # characters the model never saw (cut at read, or beyond maxlen)
    probs: np.ndarray            # class scores [C]
    predicted: int
    target: int
    method: str
    output: float                # F_t(x)
    output_kind: str             # "softmax", "sigmoid" or "raw"
    baseline_output: float = None   # integrated gradients: F_t(x'), delta, steps, baseline
    delta: float = None
    steps: int = None
    baseline: str = None

    def to_json(self, classes, word_level=False):
        """The JSON of a text explained (explain.py's shard lines, with the record's id and label added):

            text, tokens, scores (one per token), truncated, method, classes, probs (in class order),
            predicted and target (class names), output_kind, output F_t(x); for integrated gradients
            baseline, baseline_output F_t(x'), delta and steps (else null); words and word_scores (the
            scores summed per jieba word). Floats have 8 significant digits (a float32 round-trips)."""
        words, word_scores = self.words(word_level)
        return {"text": self.text, "tokens": list(self.tokens), "scores": short(self.scores),
                "truncated": int(self.truncated), "method": self.method, "classes": list(classes),
                "probs": short(self.probs), "predicted": classes[self.predicted], "target": classes[self.target],
                "output_kind": self.output_kind, "output": short(self.output)[0], "baseline": self.baseline,
                "baseline_output": None if self.baseline_output is None else short(self.baseline_output)[0],
                "delta": None if self.delta is None else short(self.delta)[0],
                "steps": None if self.steps is None else int(self.steps),
                "words": list(words), "word_scores": short(word_scores)}

    def words(self, word_level=False):
        """(jieba words, their summed scores); a word-level tokenizer's tokens are words already."""
        if word_level:
            return list(self.tokens), [float(s) for s in self.scores]
        return word_sums(self.tokens, self.scores)


def short(values):
    """float32 values as JSON numbers with 8 significant digits (enough to round-trip a float32)."""
    return [float(f"{v:.8g}") for v in np.asarray(values, np.float64).ravel()]


def word_sums(tokens, scores):
    """Characters -> the jieba words of the same text, with the characters' scores summed per word."""
    import jieba
    jieba.setLogLevel(60)
    words, sums, pos = [], [], 0
    for word in jieba.lcut("".join(tokens), HMM=True):
        words.append(word)
        sums.append(float(np.sum(scores[pos:pos + len(word)])))
        pos += len(word)
    return words, sums


def encode(tokenizer, texts, token_lists, maxlen):
    """Token ids [N, maxlen] and, per text, the position of its first token. This project's
    tokenizer encodes the token lists already made (jieba runs once per text); others encode
    the texts themselves (pre-padding puts a text at the end of its row)."""
    if hasattr(tokenizer, "ids"):
        token_ids = np.zeros((len(texts), maxlen), np.int32)     # PAD = 0, as Tokenizer.encode
        for row, tokens in enumerate(token_lists):
            ids = tokenizer.ids(tokens[:maxlen])
            token_ids[row, :len(ids)] = ids
        return token_ids, [0] * len(texts)
    pre = getattr(tokenizer, "padding", "post") == "pre"
    firsts = [maxlen - min(len(tokens), maxlen) if pre else 0 for tokens in token_lists]
    return tokenizer.encode(texts, maxlen), firsts


def explain_texts(ckpt, texts, method, *, target=None, steps=STEPS, baseline=None, reduce="sum", samples=None,
                  seed=0, texts_per_call=TEXTS_PER_CALL, on_progress=None, timer=None):
    """Explain texts with one method: one TextAttribution per text, in order.

    ckpt: a checkpoint.Checkpoint or a user_model.UserModel (model, tokenizer, classes, maxlen, meta).
    Texts are cut as every reader cuts them (dataset.cap_text_counted) and tokenized once.
    on_progress(done): called after each call; timer: a list that gets each call's seconds."""
    import time

    from tig.dataset import cap_text_counted
    from tig.tokenizer import kept
    method = canonical(method)
    tokenizer, maxlen, out = ckpt.tokenizer, ckpt.maxlen, []
    for start in range(0, len(texts), texts_per_call):
        chunk, cuts = zip(*[cap_text_counted(t) for t in texts[start:start + texts_per_call]])
        token_lists = [tokenizer.tokenize(t) for t in chunk]
        token_ids, firsts = encode(tokenizer, list(chunk), token_lists, maxlen)
        began = time.perf_counter()
        a = attribute(ckpt.model, token_ids, method, target=target, steps=steps, baseline=baseline, reduce=reduce,
                      samples=samples, seed=seed, layer=ckpt.meta.get("layer"),
                      padding=getattr(tokenizer, "padding", "post"))
        if timer is not None:
            timer.append(time.perf_counter() - began)
        for row, (text, cut, tokens, first) in enumerate(zip(chunk, cuts, token_lists, firsts)):
            seen = kept(tokens, maxlen, getattr(tokenizer, "padding", "post"))
            positions = slice(first, first + len(seen))
            out.append(TextAttribution(
                text=text, tokens=seen, scores=a.scores[row, positions], token_ids=a.token_ids[row, positions],
                truncated=cut + len("".join(tokens)) - len("".join(seen)), probs=a.probs[row],
                predicted=int(a.probs[row].argmax()), target=int(a.target[row]), method=method,
                output=float(a.output[row]), output_kind=a.output_kind,
                baseline_output=None if a.baseline_output is None else float(a.baseline_output[row]),
                delta=None if a.delta is None else float(a.delta[row]),
                steps=None if a.steps is None else int(a.steps[row]), baseline=a.baseline))
        if on_progress is not None:
            on_progress(min(start + texts_per_call, len(texts)))
    return out
