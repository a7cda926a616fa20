"""Benchmark training with and without XLA (Keras `compile(jit_compile=...)`), in one run.

    nice -n 5 python bench/bench_train.py --task hotel --data-dir ../shared/data
    nice -n 5 python bench/bench_train.py --task thucnews --data-dir ../shared/data [--arch fasttext]

Builds the task's tokenizer, inputs, model and optimizer exactly as train.py does (its functions
and defaults), then for jit_compile=False and jit_compile=True trains a fresh model from the same
seed on the same batches:
  - warm-up: one slice of an epoch with every batch shape an epoch has (full batches and the last,
    partial one), so tracing and XLA compilation are timed apart ("first-epoch overhead": warm-up
    time minus what its steps cost once compiled);
  - then --steps batches timed, --repeats times, alternating off, on, off, on... so the noise of
    a shared machine hits both settings; the ratio XLA / no XLA (seconds per step) is taken per
    adjacent pair, and its median is the number to quote.
Prints seconds per step for each (best and median over repeats), the ratio, the overhead, and the
final training loss and validation accuracy of each after the same number of steps (not
bit-identical: XLA fuses and reorders float operations). The last line is all of it as JSON, as
in bench.py.
An arch that cannot train under XLA gets one line saying why; the run goes on without it (and
without a ratio). A bad flag or missing data is one line and a non-zero exit, as in every script.
`--dropout 0` shows what XLA costs without dropout: on CPU, XLA's random numbers for dropout
(Keras' stateless_dropout) are the slow part.
"""

from tig.cli import quiet_tensorflow

import json
import os
import time

import numpy as np

# defaults, visible in one place (the model's and the optimizer's are train.py's and model.py's)
TASK = "hotel"
STEPS = 300          # timed batches per repeat and setting
REPEATS = 3          # timed blocks per setting, alternating off/on
WARMUP_BATCHES = 10  # full batches in the warm-up slice (plus the epoch's partial batch)
SETTINGS = (False, True)   # jit_compile values, in the order they alternate
VAL_BATCH_SIZE = 256       # train.py's validation batch


def parse_args(argv=None):
    from tig.cli import ArgumentParser, choice, float_range, int_range
    from tig.dataset import TASKS
    from tig.defaults import ARCHS, DROPOUT, EMBED_DIM, HIDDEN
    from tig.training import BATCH_SIZE, LEARNING_RATE
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=TASK, type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--data-dir", default=None, help="data directory (default: $TIG_DATA_DIR, then ./data)")
    p.add_argument("--arch", default="cnn", type=choice(ARCHS, "architecture"), help=f"one of: {', '.join(ARCHS)}")
    p.add_argument("--timed-steps", type=int_range(1), default=STEPS, help="timed batches per repeat and setting")
    p.add_argument("--repeats", type=int_range(1), default=REPEATS, help="timed blocks per setting, alternating")
    p.add_argument("--batch-size", type=int_range(1), default=BATCH_SIZE, help="Texts per training step.")
    p.add_argument("--lr", type=float_range(0, 10, low_open=True), default=LEARNING_RATE, help="Adam learning rate.")
    p.add_argument("--dropout", type=float_range(0, 1, high_open=True), default=DROPOUT,
                   help="as train.py's (0 isolates the cost of XLA's random numbers for dropout on CPU)")
    p.add_argument("--hidden", type=int_range(1), default=HIDDEN, help="as train.py's: conv filters / units / width")
    p.add_argument("--embed-dim", type=int_range(1), default=EMBED_DIM, help="as train.py's")
    p.add_argument("--seed", type=int_range(0), default=0, help="Random seed of the weights.")
    return p.parse_args(argv)


def prepare(args):
    """Inputs as train.py makes them: tokenizer fit on the training texts, its default maxlen."""
    from tig.dataset import load_task
    from tig.tokenizer import Tokenizer
    from tig.training import MIN_FREQ, default_maxlen
    data = load_task(args.task, args.data_dir)
    tokenizer = Tokenizer.fit(data.train.texts, level="char", min_freq=MIN_FREQ)
    maxlen = default_maxlen(tokenizer, data.train.texts)
    x_train, x_val = (tokenizer.encode(t, maxlen) for t in (data.train.texts, data.val.texts))
    return data, tokenizer, maxlen, x_train, x_val


def fresh_model(args, data, tokenizer, x_train, jit_compile):
    """The same model, optimizer and (infinite, reshuffled) training batches for either setting."""
    import keras
    from tig.model import build_model, make_optimizer
    from tig.training import MASK_RATE, make_dataset
    keras.utils.set_random_seed(args.seed)   # same initial weights, dropout and shuffle seeds
    model = build_model(args.arch, len(tokenizer), len(data.classes), args.embed_dim, args.dropout, args.hidden)
    model.compile(optimizer=make_optimizer(args.arch, args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    if model.jit_compile != jit_compile:     # Keras falls back to False when a layer can't be compiled
        raise RuntimeError(f"Keras set jit_compile={model.jit_compile} (a layer does not support XLA)")
    y = data.train.labels
    # warm-up slice: full batches plus one batch of the size an epoch ends with
    warm = WARMUP_BATCHES * args.batch_size + len(x_train) % args.batch_size
    warm_ds = make_dataset(x_train[:warm], y[:warm], args.batch_size, shuffle=True, mask_rate=MASK_RATE,
                           seed=args.seed)
    train_ds = make_dataset(x_train, y, args.batch_size, shuffle=True, mask_rate=MASK_RATE, seed=args.seed).repeat()
    return model, warm_ds, train_ds


def timed_fit(model, ds, steps=None):
    """Seconds for one fit over `steps` batches of ds (all of it if None), and its mean loss."""
    start = time.perf_counter()
    history = model.fit(ds, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return time.perf_counter() - start, float(history.history["loss"][-1])


def warm_up(args, data, tokenizer, x_train):
    """{jit_compile: run} for each setting that can train this arch, compiled by its warm-up."""
    runs = {}
    for jit in SETTINGS:
        try:
            model, warm_ds, train_ds = fresh_model(args, data, tokenizer, x_train, jit)
            seconds, _ = timed_fit(model, warm_ds)
        except Exception as e:
            if not jit:   # without XLA it must train: that failure is the run's error
                raise
            print(f"jit_compile={jit} cannot train {args.arch}: {e.__class__.__name__}: "
                  f"{(str(e).strip().splitlines() or [''])[0][:160]}")
            continue
        runs[jit] = {"model": model, "data": train_ds, "warmup_seconds": seconds,
                     "warmup_steps": len(warm_ds), "block_seconds": [], "losses": []}
    return runs


def time_blocks(args, runs):
    """--repeats blocks of --steps batches per setting, alternating off, on, off, on, ..."""
    for _ in range(args.repeats):
        for run in runs.values():
            seconds, loss = timed_fit(run["model"], run["data"], args.timed_steps)
            run["block_seconds"].append(seconds)
            run["losses"].append(loss)


def summarize(args, runs, data, maxlen, x_train, x_val):
    """Every number of the run, as one JSON-ready dict."""
    from tig.training import make_dataset
    results = {"task": args.task, "arch": args.arch, "dropout": args.dropout, "hidden": args.hidden,
               "embed_dim": args.embed_dim, "maxlen": maxlen, "batch_size": args.batch_size, "steps": args.timed_steps,
               "repeats": args.repeats, "train_texts": len(x_train), "cpu_cores": os.cpu_count()}
    val_ds = make_dataset(x_val, data.val.labels, VAL_BATCH_SIZE)
    for jit, run in runs.items():
        per_step = np.array(run["block_seconds"]) / args.timed_steps
        val_loss, val_accuracy = run["model"].evaluate(val_ds, verbose=0)
        results["xla" if jit else "no_xla"] = {
            "seconds_per_step": per_step.tolist(), "best_seconds_per_step": float(per_step.min()),
            "median_seconds_per_step": float(np.median(per_step)),
            "warmup_seconds": run["warmup_seconds"], "warmup_steps": run["warmup_steps"],
            # first-epoch overhead: the warm-up's cost beyond its steps at the compiled speed
            "first_epoch_overhead_seconds": run["warmup_seconds"] - run["warmup_steps"] * float(np.median(per_step)),
            "final_train_loss": run["losses"][-1], "val_loss": float(val_loss), "val_accuracy": float(val_accuracy),
            "trained_steps": run["warmup_steps"] + args.timed_steps * args.repeats}
    if len(runs) == 2:
        pairs = [on / off for off, on in zip(runs[False]["block_seconds"], runs[True]["block_seconds"])]
        results.update(
            xla_over_no_xla_per_pair=pairs, xla_over_no_xla_median=float(np.median(pairs)),
            train_loss_difference=results["xla"]["final_train_loss"] - results["no_xla"]["final_train_loss"],
            val_accuracy_difference=results["xla"]["val_accuracy"] - results["no_xla"]["val_accuracy"])
    return results


def print_results(results):
    for key, jit in (("no_xla", False), ("xla", True)):
        if key in results:
            r = results[key]
            print(f"jit_compile={str(jit):5s}  {1000 * r['best_seconds_per_step']:7.2f} ms/step best, "
                  f"{1000 * r['median_seconds_per_step']:7.2f} median   first-epoch overhead "
                  f"{r['first_epoch_overhead_seconds']:6.2f} s   after {r['trained_steps']} steps: train loss "
                  f"{r['final_train_loss']:.4f}, val accuracy {r['val_accuracy']:.4f}")
    if "xla_over_no_xla_median" in results:
        print(f"time per step XLA / no XLA, per adjacent pair: "
              f"{', '.join(f'{x:.3f}' for x in results['xla_over_no_xla_per_pair'])}   "
              f"median {results['xla_over_no_xla_median']:.3f}  (< 1: XLA faster)")
        print(f"XLA minus no XLA: final train loss {results['train_loss_difference']:+.4f}, "
              f"val accuracy {results['val_accuracy_difference']:+.4f}")
    print(json.dumps(results))


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    data, tokenizer, maxlen, x_train, x_val = prepare(args)
    print(f"task {args.task}, arch {args.arch}, dropout {args.dropout}: {len(x_train)} train texts, maxlen {maxlen}, "
          f"vocabulary {len(tokenizer)}, batch {args.batch_size}; {args.repeats} x {args.timed_steps} timed steps per "
          f"setting, {os.cpu_count()} CPU cores")
    runs = warm_up(args, data, tokenizer, x_train)
    time_blocks(args, runs)
    print_results(summarize(args, runs, data, maxlen, x_train, x_val))


if __name__ == "__main__":
    from tig.cli import run
    run(main)
