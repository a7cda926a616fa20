"""What every command line of the project shares: exit codes for errors, argument types,
TensorFlow start-up, task and checkpoint resolution.

Contract of every script: a usage error (a bad flag or value) prints one line and exits 2; a
runtime error (errors.UserError: a missing file, a bad checkpoint; or a full disk) prints one line
and exits 1; neither prints a traceback unless `--debug` is given or TIG_DEBUG=1 is set. Every
script parses its arguments before importing TensorFlow, so --help and usage errors are instant.
Outputs go through files.py (atomic writes into folders the program owns).
"""
import argparse
import glob
import math
import os
import re
import sys

from tig.errors import UserError, printable

CHECKPOINTS_DIR = "checkpoints"
MAX_MAXLEN = 2048               # tokens per text at most: dataset.MAX_TEXT_CHARS, where every text is cut


# --- start-up ---------------------------------------------------------------------------

def quiet_tensorflow():
    """Import TensorFlow with its start-up lines hidden, before anything else imports it.

    absl prints the oneDNN notice before any log level applies, so TF_CPP_MIN_LOG_LEVEL alone
    cannot hide it; the usual TF_ENABLE_ONEDNN_OPTS=0 would, but it makes CPU training about
    1.4x slower here (hotel: 57 vs 41 ms/step). So stderr is muted for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    except KeyboardInterrupt:   # Ctrl-C during the import (seconds long): one line, as under run()
        if "--debug" in sys.argv or os.environ.get("TIG_DEBUG") == "1":
            raise
        sys.exit("interrupted")


def run(main):
    """Run a script's main(): one line and a non-zero exit for every error, no traceback."""
    import warnings
    warnings.showwarning = show_warning
    debug = "--debug" in sys.argv or os.environ.get("TIG_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        main()
    except SystemExit:
        raise
    except UserError as e:
        if debug:
            raise
        sys.exit(f"error: {printable(str(e))}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    except MemoryError:
        if debug:
            raise
        sys.exit("error: out of memory (try fewer texts, fewer --steps or a smaller --batch-size)")
    except OSError as e:   # disk full, permissions, a path that is a folder...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        sys.exit(f"error: {printable(e.strerror or e)}{printable(where)}")
    except Exception as e:
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        sys.exit(f"error: unexpected {e.__class__.__name__}: {printable(first)} (rerun with --debug for details)")


class Progress:
    """Progress of a long loop on stderr: done/total, items per second and the time left. On a terminal one
    line updated in place; elsewhere (a log file, a pipe) a plain line at most every `every` seconds and at
    the end, with no cursor codes. update(done) sets the count, advance(n) adds to it; the rate counts only
    what this run did (`done` at the start: work resumed from before)."""

    def __init__(self, total, unit, done=0, every=10.0, stream=None):
        import time
        self.total, self.unit, self.every, self.clock = total, unit, every, time.perf_counter
        self.done, self.first = done, done
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.start = self.last = self.clock()
        self.show()

    def advance(self, n):
        self.update(self.done + n)

    def update(self, done):
        self.done = done
        now = self.clock()
        if self.terminal or done >= self.total or now - self.last >= self.every:
            self.last = now
            self.show()

    def show(self):
        elapsed = self.clock() - self.start
        rate = (self.done - self.first) / elapsed if elapsed > 0 and self.done > self.first else 0.0
        width = 24
        filled = int(width * min(self.done, self.total) / max(self.total, 1))
        text = (f"[{'=' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}s "
                f"({self.done / max(self.total, 1):.0%})  "
                f"{rate:.1f} {self.unit}s/s  {elapsed:.0f}s"
                + (f"  eta {(self.total - self.done) / rate:.0f}s" if rate and self.done < self.total else ""))
        end = "\n" if self.done >= self.total or not self.terminal else ""
        self.stream.write(("\r" + text + end) if self.terminal else text + end)
        self.stream.flush()


# --- arguments ----------------------------------------------------------------------------

class HelpFormatter(argparse.HelpFormatter):
    """--help with each flag's default appended, unless its help already says it or there is none
    to show (None, False); the description and help are rewrapped as whole sentences."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default in (None, False, argparse.SUPPRESS)
                or text == argparse.SUPPRESS):
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(map(str, default))
        return f"{text.rstrip()} (default: {str(default).replace('%', '%%')})".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit status 2, defaults in --help, and
    as description the whole first paragraph of the script's docstring when given its first line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        doc = sys._getframe(1).f_globals.get("__doc__") or ""
        description = kwargs.get("description")
        if description and doc.startswith(description):   # __doc__.splitlines()[0] stops mid-sentence
            kwargs["description"] = " ".join(doc.strip().split("\n\n")[0].split())
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="Show tracebacks of errors.")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def steps_or_auto(high):
    """argparse type: "auto" (integrated gradients' adaptive steps) or an integer from 1 to high."""
    def parse(text):
        if text == "auto":
            return text
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from 1 to {high} or 'auto', got {text!r}")
        return int(text)
    parse.__name__ = "steps"
    return parse


def int_range(low, high=None):
    """argparse type: an integer in [low, high]."""
    def parse(value):
        if not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")
        number = int(value)
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {number}")
        return number
    parse.__name__ = "integer"
    return parse


def float_range(low, high, *, low_open=False, high_open=False):
    """argparse type: a finite float in the interval [low, high] (ends open as asked)."""
    def parse(value):
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        too_low = number <= low if low_open else number < low
        too_high = number >= high if high_open else number > high
        if not math.isfinite(number) or too_low or too_high:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {value}")
        return number
    parse.__name__ = "number"
    return parse


def comma_list(choices=None, name="value"):
    """argparse type: a non-empty comma-separated list, each item one of `choices`."""
    def parse(value):
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"unknown {name} {item!r}; choose from: {', '.join(choices)}")
        return list(dict.fromkeys(items))
    parse.__name__ = "list"
    return parse


def choice(choices, name):
    """argparse type: one of `choices`, with a one-line error naming them."""
    def parse(value):
        if value not in choices:
            raise argparse.ArgumentTypeError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        return value
    parse.__name__ = name
    return parse


# --- checkpoints --------------------------------------------------------------------------

def latest_checkpoint(root=CHECKPOINTS_DIR):
    """The most recently written checkpoint under root, or None."""
    from tig.checkpoint import checkpoint_time
    found = [(checkpoint_time(path), path) for path in glob.glob(os.path.join(root, "*"))]
    found = [(t, path) for t, path in found if t is not None]
    return max(found)[1] if found else None


def resolve_checkpoint(task=None, checkpoint=None, announce=True):
    """Load the checkpoint for a CLI: --checkpoint, else checkpoints/<task>, else the newest one.

    With both a task and a checkpoint, the checkpoint must have been trained for that task.
    """
    from tig.checkpoint import load_checkpoint
    if checkpoint is None and task is not None:
        checkpoint = os.path.join(CHECKPOINTS_DIR, task)
        if not os.path.exists(checkpoint):
            raise UserError(f"no checkpoint for task {task!r} at {checkpoint}; "
                            f"train one with: python train.py --task {task}")
    if checkpoint is None:
        checkpoint = latest_checkpoint()
        if checkpoint is None:
            raise UserError("no checkpoint found under checkpoints/; train one with: python train.py --task reviews "
                            "(or give --checkpoint DIR)")
        if announce:
            print(f"using the most recent checkpoint: {printable(checkpoint)}", file=sys.stderr)
    ckpt = load_checkpoint(checkpoint)
    trained_for = ckpt.meta.get("task")
    if task is not None and trained_for != task:
        raise UserError(f"checkpoint {checkpoint} was trained for task {trained_for!r}, not {task!r} "
                        f"(classes {', '.join(ckpt.classes)}); train one with: python train.py --task {task} "
                        f"--out DIR")
    if announce and old_split(ckpt.meta):
        print(f"note: {printable(checkpoint)} was trained on the old split (no split_rule in its meta.json): its "
              "metrics count test texts that are also training texts; retrain it for held-out figures", file=sys.stderr)
    return ckpt


def old_split(meta):
    """True for a checkpoint trained before splits were deduplicated (THUCNews' official split never changed)."""
    return meta.get("split_rule") is None and meta.get("task") != "thucnews"


def add_model_arguments(p):
    """--checkpoint's alternative: a user's own Keras 3 model (see tig/user_model.py)."""
    p.add_argument("--model", default=None, help="your own Keras 3 model (.keras) instead of a checkpoint")
    p.add_argument("--vocab", default=None, help="with --model: vocab.txt, one token per line (line number = id)")
    p.add_argument("--tokenizer", default=None, help="with --model: this project's tokenizer.json")
    p.add_argument("--classes", default=None, help="with --model: class names, comma-separated (default: the "
                                                   "task's, else 0,1,...)")
    p.add_argument("--maxlen", type=int_range(1, MAX_MAXLEN), default=None, help="with --model: tokens per text for an "
                                                                     "int-input model without a fixed length")
    p.add_argument("--layer", default=None, help="with --model: the Embedding layer to explain, by name")
    p.add_argument("--padding", default=None, choices=("pre", "post"),
                   help="with --model (token ids): pad each text at the start (pre, keras pad_sequences' "
                        "default) or the end (post, default), as the model was trained")
    p.add_argument("--custom-objects", default=None, metavar="FILE.py",
                   help="with --model: a Python file whose import registers the model's own layers and functions "
                        "(@keras.saving.register_keras_serializable)")


def resolve_explainable(args, announce=True):
    """What a CLI explains: the user's --model, else the checkpoint (see resolve_checkpoint)."""
    model_flags = [f"--{name.replace('_', '-')}" for name in ("vocab", "tokenizer", "classes", "maxlen", "layer",
                                                               "padding", "custom_objects")
                   if getattr(args, name, None) is not None]
    if getattr(args, "model", None) is None:
        if model_flags:
            raise UserError(f"{model_flags[0]} goes with --model")
        return resolve_checkpoint(args.task, args.checkpoint, announce)
    if args.checkpoint:
        raise UserError("give --model or --checkpoint, not both")
    from tig.user_model import load_user_model
    classes = args.classes
    if classes is None and args.task is not None:
        from tig.dataset import TASK_CLASSES
        classes = TASK_CLASSES.get(args.task)
    return load_user_model(args.model, vocab=args.vocab, tokenizer=args.tokenizer, classes=classes,
                           maxlen=args.maxlen, task=args.task, layer=args.layer,
                           padding=getattr(args, "padding", None), custom_objects=getattr(args, "custom_objects", None))


def class_index(target, classes):
    """A class given by name or by index (--target) -> its index; None stays None."""
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    if target.isascii() and target.isdigit() and int(target) < len(classes):
        return int(target)
    raise UserError(f"unknown target {target!r}; classes are: " + ", ".join(f"{i} {c}" for i, c in enumerate(classes)))


# --- safe outputs ------------------------------------------------------------------------

def show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning through the sanitiser: a library warning quoting a text (matplotlib's
    "Glyph ... missing") prints no raw control character."""
    import warnings
    text = warnings.formatwarning(message, category, filename, lineno, line)
    stream = file or sys.stderr
    try:
        stream.write("\n".join(printable(part) for part in text.rstrip("\n").split("\n")) + "\n")
    except OSError:
        pass


def add_replace_argument(p):
    """--replace: the one way to let a command overwrite files in a folder it did not create."""
    p.add_argument("--replace", action="store_true",
                   help="Overwrite files of the same names in an existing --out folder that this project did not "
                        "create (for example to regenerate asset/); without it such a folder is refused.")
