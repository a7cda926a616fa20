"""Real fastText and this project's classifier, trained side by side on the same split in one run.

    pip install fasttext-wheel        # optional: only this script needs it
    python bench/compare_fasttext.py --task thucnews --data-dir ../shared/data

Trains the `fasttext-wheel` package (characters as tokens, wordNgrams 3, dim 200, 25 epochs,
lr 0.5, as its authors' THUCNews setting) on exactly the train split that train.py uses,
then train.py with TRAIN_ARGS[task] (or --train-args), and prints both test accuracies (on the whole
test split, and on its texts that are not training texts: THUCNews' official split repeats a few titles)
and fit times (wall time of fitting only, same machine, same run) with their ratio.
"""
import sys

import os

from tig.cli import quiet_tensorflow

import json
import shlex
import subprocess
import tempfile
import time

import numpy as np

from tig.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository: train.py

# real fastText, characters as tokens
FASTTEXT = {"wordNgrams": 3, "dim": 200, "epoch": 25, "lr": 0.5, "minCount": 1, "loss": "softmax"}
# the project's side: train.py arguments per task (--task and --data-dir are added)
TRAIN_ARGS = {
    "thucnews": "--arch fasttext",   # its defaults (train.ARCH_DEFAULTS)
}
DEFAULT_TRAIN_ARGS = "--arch fasttext --dropout 0.2"


def import_fasttext():
    from tig.errors import UserError
    try:
        import fasttext
    except ImportError:
        raise UserError("the fastText comparison needs the optional package: pip install fasttext-wheel") from None
    return fasttext


def fasttext_line(text):
    """Characters separated by spaces (whitespace itself dropped: fastText splits on it)."""
    from tig.tokenizer import clean_text
    return " ".join(c for c in clean_text(text) if not c.isspace())


def run_fasttext(data, threads=None, seed=0):
    """Train real fastText on data.train, return (test predictions, fit seconds)."""
    fasttext = import_fasttext()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            for text, label in zip(data.train.texts, data.train.labels):
                f.write(f"__label__{label} {fasttext_line(text)}\n")
        start = time.time()
        model = fasttext.train_supervised(input=path, thread=threads or os.cpu_count() or 1, seed=seed,
                                          verbose=0, **FASTTEXT)
        seconds = time.time() - start
    labels, _ = model.predict([fasttext_line(t) for t in data.test.texts], k=1)
    return np.array([int(label[0].replace("__label__", "")) if label else -1 for label in labels]), seconds


def checkpoint_size(directory):
    """Parameters of the saved model and the size of its file (which may also hold optimizer state)."""
    from tig.checkpoint import MODEL_FILE, current_version, load_checkpoint
    parameters = load_checkpoint(directory).model.count_params()
    return {"parameters": int(parameters), "parameter_mb": parameters * 4 / 1e6,
            "file_mb": os.path.getsize(os.path.join(current_version(directory), MODEL_FILE)) / 1e6}


def parse_args(argv=None):
    from tig.cli import ArgumentParser, choice, int_range
    from tig.dataset import TASKS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="thucnews", type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("--train-args", default=None,
                   help="train.py arguments for the project's model (default: the task's entry in TRAIN_ARGS)")
    p.add_argument("--out", default=None, help="checkpoint of the project's model (default: runs/compare/<task>)")
    p.add_argument("--threads", type=int_range(1), default=None, help="fastText threads (default: all CPU cores)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    import_fasttext()   # fail before any training when the package is missing
    from tig.dataset import load_task
    from tig.checkpoint import MODEL_FILE, check_checkpoint_target
    out = args.out or os.path.join("runs", "compare", args.task)
    check_checkpoint_target(out)   # before fastText's minutes, not after
    data = load_task(args.task, args.data_dir)
    print(f"fastText {FASTTEXT} on {len(data.train.texts)} training texts ...", file=sys.stderr)
    ft_pred, ft_seconds = run_fasttext(data, args.threads)
    unseen = data.unseen_test()
    ft_acc = float(np.mean(ft_pred == data.test.labels))
    ft_unseen = float(np.mean(ft_pred[unseen] == data.test.labels[unseen]))
    print(f"fastText: test accuracy {ft_acc:.4f}, fit {ft_seconds:.1f}s", file=sys.stderr)

    train_args = shlex.split(args.train_args if args.train_args is not None
                             else TRAIN_ARGS.get(args.task, DEFAULT_TRAIN_ARGS))
    train_argv = ["--task", args.task, "--out", out] + (["--data-dir", args.data_dir] if args.data_dir else []) \
        + train_args
    # train.py in its own process, as a user runs it; its checkpoint's metrics.json holds the numbers
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *train_argv], stdout=subprocess.DEVNULL)
    if done.returncode:
        raise UserError(f"train.py failed (exit {done.returncode}): python train.py {shlex.join(train_argv)}")
    from tig.checkpoint import load_checkpoint
    metrics = load_checkpoint(out).metrics
    size = checkpoint_size(out)

    ours = "python train.py " + " ".join(shlex.quote(a) for a in train_argv)
    rows = [("fastText (fasttext-wheel, chars, " + ", ".join(f"{k} {v}" for k, v in FASTTEXT.items()) + ")",
             ft_acc, ft_unseen, ft_seconds),
            (ours, metrics["test_accuracy"], metrics["test_accuracy_not_in_train"], metrics["train_seconds"])]
    print(f"\n### {args.task}: {len(data.test.texts)} test texts ({int(unseen.sum())} not in training), "
          f"{os.cpu_count()} CPU cores\n")
    print("| model | test accuracy | on test texts not in training | fit time |\n|---|---|---|---|")
    for name, acc, acc_unseen, seconds in rows:
        print(f"| {name} | {acc:.4f} | {acc_unseen:.4f} | {seconds:.1f} s |")
    print(f"\naccuracy difference (ours - fastText): {100 * (metrics['test_accuracy'] - ft_acc):+.2f} points; "
          f"fit time ratio (ours / fastText): {metrics['train_seconds'] / ft_seconds:.2f}x")
    print(f"our checkpoint: {size['parameters']:,} parameters = {size['parameter_mb']:.1f} MB of float32 weights; "
          f"{MODEL_FILE} {size['file_mb']:.1f} MB")
    result = {"task": args.task, "test_texts_not_in_train": int(unseen.sum()),
              "fasttext": {"params": FASTTEXT, "test_accuracy": ft_acc, "test_accuracy_not_in_train": ft_unseen,
                           "fit_seconds": ft_seconds},
              "ours": {"command": ours, **metrics, **size}}
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    from tig.cli import run
    run(main)
