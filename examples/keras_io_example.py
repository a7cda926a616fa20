"""Train the keras-io `text_classification_from_scratch` model on a task and save it as .keras:
a user's own model, made the way the Keras tutorial makes it, for trying `--model`.

    python examples/keras_io_example.py --task hotel --data-dir ../shared/data --out /tmp/keras_io_hotel.keras
    python examples/keras_io_example.py ... --out my_model.keras --int-out int_model.keras --vocab-out vocab.txt

--int-out also saves the nested int model (token ids in) and --vocab-out its vocabulary, one token
per line (line number = id): what `--model int_model.keras --vocab vocab.txt` explains.

The model (scaled by --dim): TextVectorization(split="character") outside a nested int model
Embedding -> Dropout -> Conv1D valid stride 3 -> Conv1D valid stride 3 -> GlobalMaxPooling1D
-> Dense relu -> Dropout -> Dense(1, sigmoid). Binary tasks only (hotel, weibo).
"""

import os

from tig.errors import printable
from tig.cli import quiet_tensorflow

MAX_TOKENS = 5000
SEQUENCE = 256
DIM = 64
EPOCHS = 3


def build(texts, max_tokens=MAX_TOKENS, sequence=SEQUENCE, dim=DIM, seed=0):
    """(end-to-end string model, its vectorizer, the nested int model); the vectorizer is adapted."""
    import keras
    import numpy as np
    from keras import layers
    keras.utils.set_random_seed(seed)
    vectorize = layers.TextVectorization(max_tokens=max_tokens, output_mode="int", split="character",
                                         output_sequence_length=sequence)
    vectorize.adapt(np.array(texts, dtype=object))
    ids_in = keras.Input((None,), dtype="int64")
    x = layers.Embedding(max_tokens, dim)(ids_in)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv1D(dim, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.Conv1D(dim, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(dim, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    int_model = keras.Model(ids_in, layers.Dense(1, activation="sigmoid", name="predictions")(x))
    int_model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    text_in = keras.Input((1,), dtype="string")
    return keras.Model(text_in, int_model(vectorize(text_in))), vectorize, int_model


def train(texts, labels, epochs=EPOCHS, verbose=0, **kwargs):
    import numpy as np
    model, vectorize, int_model = build(texts, **kwargs)
    int_model.fit(vectorize(np.array(texts, dtype=object)), np.array(labels), epochs=epochs, batch_size=32,
                  verbose=verbose)
    return model, int_model


def main(argv=None):
    import tempfile
    from tig.errors import UserError
    from tig.files import current_umask
    from tig.cli import ArgumentParser, choice, int_range
    from tig.dataset import TASKS, load_task
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hotel", type=choice(TASKS, "task"), help="Task whose training split is used.")
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("--out", required=True, help="a new .keras file (an existing path is refused)")
    p.add_argument("--epochs", type=int_range(1), default=EPOCHS, help="Training epochs.")
    p.add_argument("--limit", type=int_range(1), default=None, help="train on the first N training texts")
    p.add_argument("--dim", type=int_range(1), default=DIM, help="Embedding and hidden size of the tutorial model.")
    p.add_argument("--int-out", default=None, help="Also save the nested int model (token ids in) here (.keras).")
    p.add_argument("--vocab-out", default=None, help="Also write its vocabulary here, one token per line.")
    args = p.parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    out = os.path.abspath(args.out)
    for path in (args.out, args.int_out, args.vocab_out):
        if path and os.path.exists(path):
            raise UserError(f"refusing to overwrite {printable(os.path.abspath(path))}; give a new path")
    for path in (args.out, args.int_out):
        if path and not path.endswith(".keras"):
            raise UserError(f"{printable(path)}: a model file must end in .keras (Keras 3's format)")
    for path in (args.out, args.int_out, args.vocab_out):
        if path:
            check_writable_folder(path)
    data = load_task(args.task, args.data_dir)
    if len(data.classes) != 2:
        raise UserError(f"task {args.task} has {len(data.classes)} classes; this example is binary")
    texts, labels = data.train.texts[:args.limit], data.train.labels[:args.limit]
    model, int_model = train(texts, labels, epochs=args.epochs, verbose=2, dim=args.dim)
    saves = [(model.save, out, ".keras")]
    if args.int_out:
        saves.append((int_model.save, args.int_out, ".keras"))
    if args.vocab_out:
        vectorizer = [l for l in model.layers if l.__class__.__name__ == "TextVectorization"][0]
        saves.append((lambda tmp: write_vocab(vectorizer.get_vocabulary(), tmp), args.vocab_out, ".txt"))
    for save, path, suffix in saves:
        if not path:
            continue
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)   # a new folder such as out/ is fine; nothing is replaced
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(path))
        os.close(fd)
        try:
            save(tmp)
            os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp made it 0600; files follow the user's umask
            os.replace(tmp, path)   # atomic: a crash never leaves half a file behind
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"saved {printable(path)}")


def check_writable_folder(path):
    """Before training: the file's folder, or the nearest folder above it that exists (the rest is
    created when saving), must be a writable folder."""
    from tig.errors import UserError
    folder = existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {printable(path)}: {printable(folder)} is not a writable folder "
                        "(checked before training)")


def write_vocab(vocab, path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{token}\n" for token in vocab))


if __name__ == "__main__":
    from tig.cli import run
    run(main)
