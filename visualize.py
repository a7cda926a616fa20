"""Explain a trained classifier character by character, as HTML <font> spans, an HTML report,
PNG images and terminal colours.

    python visualize.py --method ig --text "房间很干净，服务也好"        # the newest checkpoint
    python visualize.py --method both --task hotel --data-dir DIR -n 5  # test-split samples
    python visualize.py --method grad --task hotel --data-dir DIR -n 5 --errors
    python visualize.py --method ig --model my_model.keras --text "..."  # your own Keras 3 model

Methods: `ig` integrated gradients, `grad` gradient x input (signed), `saliency` the gradient's
L2 norm (unsigned), `both` = grad and ig on the same texts. Rendering lives in render.py
(HTML, Markdown, terminal) and plots.py (PNG); this file turns texts into Explanations and
runs the command line.
"""
import os

from errors import printable
from cli import quiet_tensorflow

quiet_tensorflow()   # before anything imports TensorFlow: keeps the command line output clean

import sys
import time

import numpy as np

from render import METHOD_TITLES, Explanation, Explanations, to_markdown, to_report_html, to_terminal

STEPS = 50
BATCH = 32                  # texts explained per call (progress bar granularity)
FORMATS = ("html", "md", "png", "ansi")
CLI_METHODS = {"ig": ["ig"], "grad": ["gradxinput"], "gradxinput": ["gradxinput"], "saliency": ["saliency"],
               "both": ["gradxinput", "ig"], "surrogate": ["surrogate"], "occlusion": ["occlusion"]}
OUTPUT_STEM = "explanations"
METHODS = ("ig", "gradxinput", "saliency", "surrogate", "occlusion")   # what attribute() computes


# --- explaining ---------------------------------------------------------------------

def attribute(model, inputs, method, *, steps=STEPS, baseline=None, target=None, reduce="sum", layer=None):
    """One batch of inputs (token ids, or texts for a string-input model) -> Attribution, for a
    method of render.METHOD_TITLES."""
    from gradients import gradients
    from integrated_gradients import DEFAULT_BASELINE, integrated_gradients
    if method == "ig":
        return integrated_gradients(model, inputs, target, layer=layer, baseline=baseline or DEFAULT_BASELINE,
                                    steps=steps, reduce=reduce)
    if method == "gradxinput":
        return gradients(model, inputs, target, layer=layer, times_input=True, reduce=reduce)
    if method == "saliency":
        return gradients(model, inputs, target, layer=layer, times_input=False)
    if method in ("surrogate", "occlusion"):
        import perturbation
        if isinstance(inputs, (list, tuple)):
            from errors import UserError
            raise UserError(f"--method {method} deletes token ids: it needs a model that takes token ids")
        explain_with = perturbation.deletion_surrogate if method == "surrogate" else perturbation.occlusion
        return explain_with(model, inputs, target, layer=layer)
    raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def explain(ckpt, texts, method="ig", *, steps=STEPS, baseline=None, target=None, reduce="sum",
            level="char", labels=None, progress=False):
    """Explain texts with one method ("ig", "gradxinput" or "saliency"); one Explanation per text, in
    an Explanations list (a notebook displays the list, or one item, with the CJK font embedded).

    ckpt: a model.Checkpoint or a user_model.UserModel (model, tokenizer, classes, maxlen, meta).
    reduce="l2" gives the original project's unsigned view of integrated gradients. level="word"
    sums character scores per jieba word.
    """
    import validate
    validate.check_texts(texts)
    validate.check_choice(level, ("char", "word"), "level")
    validate.check_choice(method, METHODS, "method")
    validate.check_labels(labels, len(texts), len(ckpt.classes))
    name = "ig-l2" if (method, reduce) == ("ig", "l2") else method
    out, bar = Explanations(), None
    if progress and len(texts) > BATCH:
        from cli import Progress
        bar = Progress(len(texts), "text")
    tokenizer, maxlen = ckpt.tokenizer, ckpt.maxlen
    from dataset import cap_text_counted
    for start in range(0, len(texts), BATCH):
        chunk, cuts = zip(*[cap_text_counted(t) for t in texts[start:start + BATCH]])   # as explain.py reads
        chunk = list(chunk)
        token_lists = [tokenizer.tokenize(t) for t in chunk]
        attribution = attribute(ckpt.model, tokenizer.encode(chunk, maxlen), method, steps=steps, baseline=baseline,
                                target=target, reduce=reduce, layer=ckpt.meta.get("layer"))
        for row, tokens in enumerate(token_lists):
            seen = tokens[:maxlen]
            # a pre-padded pipeline (--padding pre) puts the text at the end of its row
            first = maxlen - len(seen) if getattr(tokenizer, "padding", "post") == "pre" else 0
            units, scores, unknown = group_units(seen, attribution.scores[row, first:first + len(seen)],
                                                 attribution.token_ids[row, first:first + len(seen)], tokenizer, level)
            pred, tgt = int(attribution.probs[row].argmax()), int(attribution.target[row])
            out.append(Explanation(
                text="".join(tokens), units=units, scores=scores, unknown=unknown, method=name,
                target=ckpt.classes[tgt], predicted=ckpt.classes[pred], prob=float(attribution.probs[row, pred]),
                target_prob=float(attribution.probs[row, tgt]),
                label=None if labels is None else ckpt.classes[labels[start + row]],
                steps=None if attribution.steps is None else int(attribution.steps[row]),
                delta=None if attribution.delta is None else float(attribution.delta[row]),
                truncated=cuts[row] + len("".join(tokens[maxlen:])),
                signed=name in ("ig", "gradxinput", "surrogate", "occlusion"),
                baseline=attribution.baseline,
                output_kind="probability" if attribution.output_kind in ("softmax", "sigmoid") else "raw"))
        if bar:
            bar.update(min(start + BATCH, len(texts)))
    return out


def group_units(tokens, scores, token_ids, tokenizer, level):
    """Model tokens -> display units; with level="word", char scores are summed per jieba word."""
    from tokenizer import UNK_ID
    unknown = [int(i) == UNK_ID for i in token_ids]
    if level == "char" or getattr(tokenizer, "level", "char") == "word":
        return list(tokens), np.asarray(scores, np.float32), unknown
    import jieba
    jieba.setLogLevel(60)
    units, grouped, unk, pos = [], [], [], 0
    for word in jieba.lcut("".join(tokens)):
        n = len(word)
        units.append(word)
        grouped.append(float(np.sum(scores[pos:pos + n])))
        unk.append(any(unknown[pos:pos + n]))
        pos += n
    return units, np.asarray(grouped, np.float32), unk


def run_methods(ckpt, texts, methods, *, labels=None, target=None, progress=True, **options):
    """Explain texts with each method; one list per text, one Explanation per method."""
    per_method = [explain(ckpt, texts, m, labels=labels, target=target, progress=progress, **options)
                  for m in methods]
    return [list(group) for group in zip(*per_method)]


def predict_probabilities(ckpt, texts):
    """Class scores [N, C] for texts: one sigmoid unit p becomes [1 - p, p]."""
    from gradients import class_scores
    return class_scores(ckpt.model, ckpt.tokenizer.encode(texts, ckpt.maxlen), layer=ckpt.meta.get("layer"))


def pick_samples(ckpt, task, data_dir, n, errors=False, max_chars=None, balanced=False):
    """The first n test samples (in split order) that the model gets right (or wrong);
    balanced: at most ceil(n / classes) per true class, so a gallery shows several classes."""
    from dataset import load_task
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


# --- outputs ------------------------------------------------------------------------

def write_outputs(rows, out, formats, stem=OUTPUT_STEM, title=None, color="auto", replace=False):
    """Write the chosen formats into `out` (each file atomically); print the terminal view.
    replace: overwrite same-named files in a folder the project did not create (--replace)."""
    from files import atomic_write, prepare_output_dir
    from plots import to_png
    files = {"md": f"{stem}.md", "html": f"{stem}.html", "png": f"{stem}.png"}
    prepare_output_dir(out, [files[f] for f in formats if f in files], replace)
    written = []
    if "md" in formats:
        written.append(atomic_write(os.path.join(out, files["md"]), to_markdown(rows)))
    if "html" in formats:
        written.append(atomic_write(os.path.join(out, files["html"]), to_report_html(rows, title or stem)))
    if "png" in formats:
        written.append(to_png(rows, os.path.join(out, files["png"]), title=title))
    if "ansi" in formats:
        print(to_terminal(rows, color == "always" or (color == "auto" and sys.stdout.isatty())))
    return written


# --- CLI ----------------------------------------------------------------------------

def parse_args(argv=None):
    from cli import ArgumentParser, add_model_arguments, add_replace_argument, choice, comma_list, int_range, steps_or_auto
    from dataset import TASKS
    from integrated_gradients import BASELINES, MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="ig", type=choice(tuple(CLI_METHODS), "method"),
                   help="ig, grad (gradient x input), saliency (gradient L2 norm) or both (grad and ig)")
    p.add_argument("--task", default=None, type=choice(TASKS, "task"),
                   help=f"one of: {', '.join(TASKS)} (checkpoint checkpoints/<task>)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (default: checkpoints/<task>, else the most recent under checkpoints/)")
    add_model_arguments(p)
    p.add_argument("--text", action="append", default=[], help="a text to explain (repeatable)")
    p.add_argument("--file", default=None, help="a UTF-8 file with one text per line")
    p.add_argument("-n", type=int_range(1), default=0, help="explain N samples from the task's test split")
    p.add_argument("--errors", action="store_true", help="with -n: misclassified samples instead of correct ones")
    p.add_argument("--data-dir", default=None, help="data directory for -n")
    # auto by default: what is shown is complete within 1% for every text; on the hotel char-CNN it took
    # 0.74x the time of 50 fixed steps (bench_steps.py, RESULTS.md)
    p.add_argument("--steps", type=steps_or_auto(MAX_STEPS), default="auto",
                   help=f"Integrated gradients steps (Gauss-Legendre nodes), 1 to {MAX_STEPS}, or auto: 16, 32, ... "
                        "512 per text until |delta| <= 1%% of |F(x) - F(x')|.")
    p.add_argument("--baseline", default=None, type=choice(BASELINES, "baseline"),
                   help=f"one of: {', '.join(BASELINES)} (default: zero)")
    p.add_argument("--target", default=None, help="class to explain, by index or name (default: predicted)")
    p.add_argument("--reduce", default="sum", choices=("sum", "l2"),
                   help="sum: signed (default); l2: the original's unsigned norm per character")
    p.add_argument("--level", default="char", choices=("char", "word"), help="word: jieba words, scores summed")
    p.add_argument("--out", default=None, help="output folder (default: a new folder under out/)")
    p.add_argument("--format", default=list(FORMATS), type=comma_list(FORMATS, "format"),
                   help="comma list of: " + ",".join(FORMATS))
    p.add_argument("--color", default="auto", choices=("auto", "always", "never"), help="terminal colours")
    add_replace_argument(p)
    args = p.parse_args(argv)
    if not (args.text or args.file or args.n):
        p.error("give --text, --file or -n")
    if args.errors and not args.n:
        p.error("--errors goes with -n")
    if args.reduce == "l2" and args.method == "both":
        p.error("--reduce l2 goes with --method ig or grad")
    return args


def read_texts(args):
    from errors import UserError
    from tokenizer import clean_text
    texts = list(args.text)
    if args.file:
        if os.path.isdir(args.file):
            raise UserError(f"--file {args.file} is a folder; give a text file with one text per line")
        from dataset import utf8_lines
        try:
            with open(args.file, "rb") as f:   # the lines explain.py reads from the same file
                texts.extend(line for line in utf8_lines(f, args.file) if line.strip())
        except FileNotFoundError:
            raise UserError(f"text file not found: {args.file}") from None
        if "\x00" in "".join(texts):
            raise UserError(f"{args.file} looks like a binary file, not one text per line")
    for i, text in enumerate(texts, 1):
        if not clean_text(text):
            raise UserError(f"text {i} is empty; give some characters to explain")
    return [clean_text(t) for t in texts]


def default_out_dir():
    base = os.path.join("out", time.strftime("visualize-%Y%m%d-%H%M%S"))
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def main(argv=None):
    from errors import UserError
    from cli import class_index, resolve_explainable
    args = parse_args(argv)
    texts = read_texts(args)
    ckpt = resolve_explainable(args)
    target = class_index(args.target, ckpt.classes)
    labels = None
    if args.n:
        task = args.task or ckpt.meta.get("task")
        if task is None:
            raise UserError("-n takes test samples of a task: give --task with --model")
        picked, labels = pick_samples(ckpt, task, args.data_dir, args.n, args.errors)
        if texts:
            labels = None
        texts += picked
    if not texts:
        raise UserError(f"no {'misclassified' if args.errors else 'correctly classified'} texts in the test split")
    methods = CLI_METHODS[args.method]
    if args.reduce == "l2" and methods == ["gradxinput"]:
        methods = ["saliency"]
    rows = run_methods(ckpt, texts, methods, labels=labels, target=target, steps=args.steps,
                       baseline=args.baseline, reduce=args.reduce, level=args.level)
    title = f"{ckpt.meta.get('task') or os.path.basename(args.model or '')} · " \
            f"{', '.join(METHOD_TITLES[e.method] for e in rows[0])}"
    for path in write_outputs(rows, args.out or default_out_dir(), args.format, title=title, color=args.color,
                              replace=args.replace):
        print(f"wrote {printable(path)}")


if __name__ == "__main__":
    from cli import run
    run(main)
