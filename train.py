"""Train a character-level Chinese text classifier and save a reloadable checkpoint.

    python train.py --task reviews                     # offline, no data directory needed
    python train.py --task hotel --data-dir DIR --epochs 4
    python train.py --task hotel --distribute mirrored    # several devices / machines: see tig/distribute.py
    # THUCNews with hashed character n-grams: --arch fasttext's defaults (ARCH_DEFAULTS below),
    # side by side with real fastText in bench/compare_fasttext.py (RESULTS.md)
    python train.py --task thucnews --data-dir DIR --arch fasttext
    # moods (2,000-row subset): start from a weibo checkpoint of the same --arch (macro-F1 0.336
    # vs 0.301 from scratch with the same flags)
    python train.py --task moods --data-dir DIR --init-from checkpoints/weibo \
        --epochs 40 --patience 6 --dropout 0.2 --lr 3e-4

Writes checkpoints/<task>/ (model.keras, tokenizer.json, meta.json, metrics.json) with
test accuracy and macro-F1 on the held-out test split; see model.py for the format. An existing
--out is replaced only when it is verifiably a checkpoint of this project (not merely a folder with
files of the same names) for the same task and --arch; another task's or arch's needs --replace-different.
"""
import os

from tig.errors import printable
from tig.cli import quiet_tensorflow

import sys
import time

import numpy as np

# the recipe's defaults live in tig/training.py, shared with bench/bench_train.py (--help shows each)
from tig.training import (ARCH_DEFAULTS, BATCH_SIZE, EPOCHS, LEARNING_RATE, MASK_RATE, MAXLEN_CAP,  # noqa: F401
                          MAXLEN_PERCENTILE, MIN_FREQ, PATIENCE, SCHEDULE, SCHEDULES, TASK_DEFAULTS,
                          default_maxlen, learning_rate, macro_f1, make_dataset)


def parse_args(argv=None):
    from tig.cli import MAX_MAXLEN, ArgumentParser, choice, float_range, int_range
    from tig.dataset import TASKS
    from tig.distribute import STRATEGIES
    from tig.defaults import ARCHS, DROPOUT, EMBED_DIM, HIDDEN
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--data-dir", default=None, help="data directory (default: $TIG_DATA_DIR, then ./data)")
    p.add_argument("--out", default=None, help="checkpoint folder: new, empty, or a checkpoint to replace "
                                               "(default: checkpoints/<task>)")
    p.add_argument("--replace-different", action="store_true",
                   help="let --out replace a checkpoint of another task or architecture (refused otherwise)")
    p.add_argument("--arch", default="cnn", type=choice(ARCHS, "architecture"), help=f"one of: {', '.join(ARCHS)}")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights where shapes allow (same --arch; embeddings "
                        "mapped token by token, a new output layer for new classes)")
    p.add_argument("--word", action="store_true", help="jieba word tokens instead of characters")
    p.add_argument("--epochs", type=int_range(1), default=EPOCHS, help="maximum epochs (early stopping on validation)")
    p.add_argument("--batch-size", type=int_range(1), default=BATCH_SIZE,
                   help="per replica: the global batch is this x the replicas of --distribute")
    p.add_argument("--distribute", default="none", type=choice(STRATEGIES, "--distribute"),
                   help="none, auto, mirrored (devices of this machine) or multiworker (TF_CONFIG); "
                        "see tig/distribute.py")
    p.add_argument("--lr", type=float_range(0, 10, low_open=True), default=LEARNING_RATE, help="Adam learning rate.")
    p.add_argument("--maxlen", type=int_range(1, MAX_MAXLEN), default=None,
                   help=f"tokens per text (default: {MAXLEN_PERCENTILE}th percentile of training lengths, "
                        f"at most {MAXLEN_CAP})")
    p.add_argument("--dropout", type=float_range(0, 1, high_open=True), default=DROPOUT,
                   help="dropout after the embedding and dense layers")
    p.add_argument("--hidden", type=int_range(0), default=HIDDEN,
                   help="conv filters / LSTM units / dense width (fasttext: 0 = no hidden layer)")
    p.add_argument("--schedule", default=SCHEDULE, type=choice(SCHEDULES, "--schedule"),
                   help="learning rate: constant, or cosine from --lr to 0 over all the epochs' steps")
    p.add_argument("--row-lr", type=float_range(0, 1e6), default=0.0,
                   help="fasttext: the embedding rows learn by plain SGD at this rate (on the batch-mean loss, "
                        "following --schedule); 0: lazy Adam at --lr like the rest. See model.SparseAdam")
    p.add_argument("--ngram-lr-scale", type=float_range(0, 1e6, low_open=True), default=1.0,
                   help="fasttext: the hashed n-gram rows learn at --lr x this")
    p.add_argument("--ngram-buckets", type=int_range(1), default=None,
                   help="fasttext: hashed rows per n-gram order (default: model.py's rule)")
    p.add_argument("--embed-dim", type=int_range(1), default=EMBED_DIM, help="Size of the token embeddings.")
    p.add_argument("--min-freq", type=int_range(1), default=MIN_FREQ, help="rarer tokens become UNK")
    p.add_argument("--mask-rate", type=float_range(0, 1, high_open=True), default=MASK_RATE,
                   help="share of real tokens replaced by the MASK id during training")
    p.add_argument("--limit", type=int_range(1), default=None, help="use only the first N training texts (quick runs)")
    p.add_argument("--seed", type=int_range(0), default=0, help="Random seed of weights, shuffling and masking.")
    p.add_argument("--patience", type=int_range(1), default=PATIENCE,
                   help="Stop after this many epochs without a better validation accuracy.")
    p.add_argument("--verbose", type=int_range(0, 2), default=None,
                   help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)")
    p.epilog = "Per-task and per-architecture defaults (a flag given wins): " + "; ".join(
        f"{name}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
        for name, values in {**TASK_DEFAULTS, **ARCH_DEFAULTS}.items()) + "."
    known, _ = p.parse_known_args(argv)      # task and arch first: their defaults apply to the flags not given
    task_defaults = TASK_DEFAULTS.get(known.task, {})
    p.set_defaults(**task_defaults)
    known, _ = p.parse_known_args(argv)      # again: a task's defaults may choose the architecture
    p.set_defaults(**{**task_defaults, **ARCH_DEFAULTS.get(known.arch, {})})
    args = p.parse_args(argv)
    if args.hidden == 0 and args.arch != "fasttext":
        p.error(f"--hidden 0 (no hidden layer) is for --arch fasttext only, not {args.arch}")
    args.out = args.out if args.out is not None else os.path.join("checkpoints", args.task)
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    from tig.distribute import build_before_fit, devices_of, is_chief, make_strategy, predict_locally
    strategy, distribute = make_strategy(args.distribute)   # first: before TensorFlow runs any op
    replicas = strategy.num_replicas_in_sync
    import keras
    from tig.errors import UserError
    from tig.dataset import load_task
    from tig.model import build_model, make_optimizer
    from tig.checkpoint import init_from_checkpoint, save_checkpoint
    from tig.tokenizer import Tokenizer

    from tig.checkpoint import check_checkpoint_target
    check_checkpoint_target(args.out, args.task, args.arch, args.replace_different)   # refuse a bad --out before spending minutes on training
    keras.utils.set_random_seed(args.seed)
    data = load_task(args.task, args.data_dir)
    train_texts, train_labels = data.train.texts, data.train.labels
    if args.limit:
        train_texts, train_labels = train_texts[:args.limit], train_labels[:args.limit]
    print(f"task {args.task}: {len(train_texts)} train / {len(data.val.texts)} val / {len(data.test.texts)} test, "
          f"{len(data.classes)} classes, {data.skipped} empty rows skipped", file=sys.stderr)
    if data.dedup:
        d = data.dedup
        print(f"deduplicated before splitting: {d['rows_read']} rows read, {d['distinct_texts']} distinct texts, "
              f"{d['duplicate_rows_removed']} repeated rows removed, {d['conflicting_texts_dropped']} texts with "
              f"conflicting labels dropped ({d['conflicting_rows_dropped']} rows)", file=sys.stderr)
    overlap = data.overlap()
    print(f"split {data.split_rule}: texts also in the training split: {overlap['val_texts_also_in_train']} of "
          f"{len(data.val.texts)} val, {overlap['test_texts_also_in_train']} of {len(data.test.texts)} test",
          file=sys.stderr)

    tokenizer = Tokenizer.fit(train_texts, level="word" if args.word else "char", min_freq=args.min_freq)
    maxlen = args.maxlen or default_maxlen(tokenizer, train_texts)
    print(f"vocabulary {len(tokenizer)} tokens, maxlen {maxlen}", file=sys.stderr)
    x_train, x_val, x_test = (tokenizer.encode(t, maxlen) for t in (train_texts, data.val.texts, data.test.texts))

    with strategy.scope():   # variables are mirrored on every replica
        model = build_model(args.arch, len(tokenizer), len(data.classes), args.embed_dim, args.dropout,
                            args.hidden, args.ngram_buckets)
        if args.init_from:
            init = init_from_checkpoint(model, tokenizer, args.init_from, data.classes)
            print(f"initialised from {printable(init['checkpoint'])}: {init['embedding_rows_mapped']}/{init['vocabulary']} "
                  f"embedding rows mapped; copied {', '.join(init['copied'])}; new {', '.join(init['fresh']) or '-'}",
                  file=sys.stderr)
        # jit_compile stays Keras' "auto", which is off on a CPU-only machine: on 2 CPU cores XLA trained
        # 2-8x slower per step (cnn hotel/THUCNews; fasttext at batch 512), see bench/bench_train.py
        steps_per_epoch = -(-len(x_train) // (args.batch_size * replicas))
        optimizer = make_optimizer(args.arch, learning_rate(args, steps_per_epoch), args.row_lr / args.lr,
                                   args.ngram_lr_scale)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    global_batch = args.batch_size * replicas
    if replicas > 1:
        print(f"distribute {distribute}: {replicas} replicas on {', '.join(devices_of(strategy))}, global batch "
              f"{global_batch}", file=sys.stderr)
    train_ds = make_dataset(x_train, train_labels, global_batch, shuffle=True, mask_rate=args.mask_rate,
                            seed=args.seed)
    val_ds = make_dataset(x_val, data.val.labels, 256)
    build_before_fit(model, strategy, (x_train[:global_batch], train_labels[:global_batch]))
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience,
                                         restore_best_weights=True)
    # a NaN loss ends training at once; the check after fit then refuses to save
    callbacks = [stop, keras.callbacks.TerminateOnNaN()]
    steps = -(-len(x_train) // global_batch)
    print(f"training {args.arch}: at most {args.epochs} epochs of {steps} steps (batch {global_batch}, lr {args.lr}), "
          f"stopping early after {args.patience} without a better validation accuracy", file=sys.stderr, flush=True)
    start = time.time()
    history = model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, callbacks=callbacks,
                        shuffle=False, verbose=args.verbose)  # tf.data already shuffles
    train_seconds = time.time() - start
    if not np.all(np.isfinite(history.history["loss"])) or not all(
            np.all(np.isfinite(w)) for w in model.get_weights()):
        raise UserError("training diverged (the loss became NaN or infinite); nothing was saved. "
                        "Try a smaller --lr")

    if replicas > 1:   # Keras' distributed predict gathers across workers; score with local weights instead
        probs = predict_locally(model, x_test)
    else:
        probs = model.predict(make_dataset(x_test, data.test.labels, 256), verbose=0)
    pred = probs.argmax(-1)
    unseen = data.unseen_test()   # all True for the splits made here; THUCNews' official test repeats a few titles
    val_acc = history.history["val_accuracy"]
    metrics = {
        "test_accuracy": float(np.mean(pred == data.test.labels)),
        "test_macro_f1": macro_f1(data.test.labels, pred, len(data.classes)),
        "test_size": int(len(pred)),
        "test_accuracy_not_in_train": float(np.mean(pred[unseen] == data.test.labels[unseen])) if unseen.any() else None,
        "test_texts_not_in_train": int(unseen.sum()),
        "split_rule": data.split_rule, "dedup": data.dedup,
        "best_val_accuracy": float(max(val_acc)),
        "epochs_run": len(val_acc),
        "best_epoch": int(np.argmax(val_acc)) + 1,
        "train_seconds": round(train_seconds, 1),
        "distribute": distribute, "replicas": int(replicas), "global_batch_size": int(global_batch),
        **overlap,
    }
    meta = {
        "task": args.task, "classes": data.classes, "maxlen": maxlen, "arch": args.arch,
        "level": tokenizer.level, "seed": args.seed, "mask_rate": args.mask_rate, "dropout": args.dropout,
        "hidden": args.hidden, "embed_dim": args.embed_dim,
        "epochs": args.epochs, "batch_size": args.batch_size, "replicas": int(replicas), "lr": args.lr,
        "schedule": args.schedule, "row_lr": args.row_lr, "ngram_lr_scale": args.ngram_lr_scale, "ngram_buckets": args.ngram_buckets,
        "min_freq": args.min_freq, "train_size": len(train_texts), "init_from": args.init_from,
        "data_sha256": data.sha256(), "split_rule": data.split_rule,
        "data_files": [os.path.basename(f) for f in data.files[:8]],
        "command": "python train.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if not is_chief(strategy):   # every worker trained the same model; only the chief writes it
        print(f"worker done (not the chief, nothing written): test accuracy {metrics['test_accuracy']:.4f}")
        return None, metrics
    out = save_checkpoint(args.out, model, tokenizer, meta, metrics, args.replace_different)
    print(f"saved {printable(out)}: test accuracy {metrics['test_accuracy']:.4f}, macro-F1 {metrics['test_macro_f1']:.4f}, "
          f"{metrics['epochs_run']} epochs in {train_seconds:.0f}s")
    return out, metrics


if __name__ == "__main__":
    from tig.cli import run
    run(main)
