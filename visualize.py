"""Explain a trained classifier character by character, as HTML <font> spans, an HTML report,
PNG images and terminal colours.

    python visualize.py --method ig --text "房间很干净，服务也好"        # the newest checkpoint
    python visualize.py --method both --task hotel --data-dir DIR -n 5  # test-split samples
    python visualize.py --method grad --task hotel --data-dir DIR -n 5 --errors
    python visualize.py --method ig --model my_model.keras --text "..."  # your own Keras 3 model

Methods (tig/methods.py): `ig` integrated gradients, `grad` gradient x input (signed), `saliency` the
gradient's L2 norm (unsigned), `occlusion`, `surrogate`, `deletion-ig` (tig/perturbation.py), `both` = grad and ig. Rendering lives in tig/render.py
(HTML, Markdown, terminal) and tig/plots.py (PNG); this file turns texts into Explanations and
runs the command line.
"""
import os

from tig.errors import printable
from tig.cli import quiet_tensorflow

import sys
import time

from tig.defaults import INTERACTIVE_STEPS
from tig.explanations import explain, pick_samples, run_methods  # noqa: F401  (visualize.explain: the notebook's name)
from tig.methods import NAMES, describe
from tig.render import METHOD_TITLES, to_markdown, to_report_html, to_terminal

FORMATS = ("html", "md", "png", "ansi")
CLI_METHODS = {**{name: [name] for name in NAMES}, "both": ["gradxinput", "ig"]}   # --method -> methods run
OUTPUT_STEM = "explanations"


# --- outputs ------------------------------------------------------------------------

def write_outputs(rows, out, formats, stem=OUTPUT_STEM, title=None, color="auto", replace=False):
    """Write the chosen formats into `out` (each file atomically); print the terminal view.
    replace: overwrite same-named files in a folder the project did not create (--replace)."""
    from tig.files import atomic_write, prepare_output_dir
    from tig.plots import to_png
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
    from tig.cli import ArgumentParser, add_model_arguments, add_replace_argument, choice, comma_list, int_range, steps_or_auto
    from tig.dataset import TASKS
    from tig.validate import BASELINES, MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="ig", type=choice(tuple(CLI_METHODS), "method"),
                   help=describe() + "; both = grad and ig on the same texts")
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
    # 0.74x the time of 50 fixed steps (bench/bench_steps.py, RESULTS.md)
    p.add_argument("--steps", type=steps_or_auto(MAX_STEPS), default=INTERACTIVE_STEPS,
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
    from tig.errors import UserError
    from tig.tokenizer import clean_text
    texts = list(args.text)
    if args.file:
        if os.path.isdir(args.file):
            raise UserError(f"--file {args.file} is a folder; give a text file with one text per line")
        from tig.readers import utf8_lines
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
    from tig.errors import UserError
    from tig.cli import class_index, resolve_explainable
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
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
    from tig.cli import run
    run(main)
