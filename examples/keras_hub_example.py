"""Train a small KerasHub text classifier FROM CONFIG (no preset download) on a task and save it
with its preprocessor as .keras: a KerasHub model to explain, made the way KerasHub makes them.

    python examples/keras_hub_example.py --task hotel --data-dir ../shared/data --out /tmp/bert.keras

The tokenizer's vocabulary is [PAD] [UNK] [CLS] [SEP] [MASK] and every character of the training
texts (WordPiece on Chinese splits into characters); the backbone is tiny (--layers, --dim).
--family bert (BertTextClassifier, default) or distil_bert (DistilBertTextClassifier).
The task outputs raw logits (KerasHub's default: no activation). Binary and multi-class tasks.
"""
import os

from tig.cli import quiet_tensorflow
from tig.hub import DIM, EPOCHS, FAMILIES, LAYERS, SEQUENCE, train

def main(argv=None):
    import tempfile
    import warnings
    from tig.errors import UserError, printable
    from tig.files import current_umask
    from tig.cli import ArgumentParser, choice, int_range
    from tig.dataset import TASKS, load_task
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hotel", type=choice(TASKS, "task"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="a new .keras file (an existing path is refused)")
    p.add_argument("--family", default="bert", type=choice(FAMILIES, "family"))
    p.add_argument("--epochs", type=int_range(1), default=EPOCHS)
    p.add_argument("--limit", type=int_range(1), default=None, help="train on the first N training texts")
    p.add_argument("--dim", type=int_range(2), default=DIM)
    p.add_argument("--layers", type=int_range(1), default=LAYERS)
    p.add_argument("--sequence", type=int_range(3), default=SEQUENCE, help="tokens per text, [CLS] and [SEP] included")
    args = p.parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        raise UserError(f"refusing to overwrite {printable(out)}; give a new --out path")
    if not out.endswith(".keras"):
        raise UserError(f"--out must end in .keras (Keras 3's format), got {printable(args.out)}")
    os.makedirs(os.path.dirname(out), exist_ok=True)   # a new folder such as out/ is fine; nothing is replaced
    if not os.access(os.path.dirname(out), os.W_OK | os.X_OK):
        raise UserError(f"cannot write {printable(out)}: its folder is not writable (checked before training)")
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        raise UserError("keras_hub_example.py needs keras-hub: pip install \"text-integrated-gradients[hub]\"") from None
    data = load_task(args.task, args.data_dir)
    texts, labels = data.train.texts[:args.limit], data.train.labels[:args.limit]
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(_hub)?(\.|$)")
    task = train(texts, labels, len(data.classes), epochs=args.epochs, verbose=2, family=args.family,
                 sequence=args.sequence, dim=args.dim, layers=args.layers)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=os.path.dirname(out))
    os.close(fd)
    try:
        task.save(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp made it 0600; files follow the user's umask
        os.replace(tmp, out)   # atomic: a crash never leaves half a file at --out
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"saved {printable(out)}")


if __name__ == "__main__":
    from tig.cli import run
    run(main)
