"""Benchmark integrated_gradients against its floor, the path before static shapes, and the
original per-alpha loop.

    python bench/bench_ig.py --checkpoint checkpoints/hotel --data-dir ../shared/data          # about a minute
    python bench/bench_ig.py --checkpoint checkpoints/hotel --data-dir ../shared/data --full   # RESULTS.md's figures
    python bench/bench_ig.py --model my_model.keras [--vocab vocab.txt | --tokenizer tokenizer.json] --task hotel

Prints, measured in this one run on the same N test texts x S steps (64 x 50 with --full; by default
a quick look: 16 texts, 1 s per variant, no memory or per-alpha loop):
  - IG as it runs now (graphs traced per length; this project's models run each text at the bucket of its own
    length) with XLA (xla=True, compiled by a warm-up call) and without (xla=False);
  - before: IG on one None-dim graph at the padded length in 32 MB chunks (embedding_split.none_dim_graphs,
    the path every model took before static shapes) and the after/before throughput;
  - the floors: one forward+backward over exactly the interpolated inputs IG runs (same lengths,
    same chunks, built in advance) through a None-dim graph, a graph per length with the number of
    rows open, a static-shape graph, and the same with XLA; IG / the fastest floor (1.00 = no overhead);
  - with --checkpoint and --full also: the original project's loop (one model call per text per alpha, timed on
    a few texts and scaled), peak memory (RSS) at S and 6*S steps in fresh processes, and the
    completeness gap of Gauss-Legendre vs the trapezoid rule at S steps.
Every time is the fastest of runs interleaved round by round (at least 3 per variant and 5 s in total,
after an untimed warm-up that traces and compiles), so load on a shared machine hits all variants alike.
The last line is all of it as JSON.
"""
import sys

import os

from tig.cli import quiet_tensorflow

import json
import resource
import subprocess
import time

import numpy as np

SAMPLES = 64
from tig.defaults import STEPS  # noqa: E402
REPEATS = 3
MIN_SECONDS = 5.0    # each timed variant runs at least REPEATS times and at least this long in total
QUICK_SAMPLES, QUICK_MIN_SECONDS = 16, 1.0   # the default run (about a minute); --full: the two above
LOOP_SAMPLES = 2     # the per-alpha loop is slow: time it on this many samples
BEFORE_FLOATS_PER_CHUNK = 1 << 23   # the default chunk before static shapes: 32 MB of embeddings


def best_time(fn, repeats=REPEATS):
    return best_times({"fn": fn}, repeats)["fn"]


def best_times(fns, repeats=REPEATS, min_seconds=MIN_SECONDS):
    """{name: fastest of its timed runs} for {name: fn}. Each fn is warmed up once (traces and
    XLA compilations are not timed; one that fails there gets None and one line saying why), then
    the fns run interleaved, round after round, so a burst of load on a shared machine hits all of
    them alike; each until it has run at least `repeats` times and `min_seconds` in total."""
    runnable = {}
    for name, fn in fns.items():
        progress(f"warming up {name} (traces and compiles, not timed)")
        try:
            fn()
            runnable[name] = fn
        except Exception as e:
            print(f"{name} cannot run: {e.__class__.__name__}: {(str(e).splitlines() or [''])[0][:120]}")
    times = {name: [] for name in runnable}
    if len(runnable) > 1:
        progress(f"timing {len(runnable)} variants interleaved, each at least {repeats} runs and {min_seconds:g} s")

    def done(name):
        return len(times[name]) >= repeats and sum(times[name]) >= min_seconds

    while not all(map(done, runnable)):
        for name, fn in runnable.items():
            if not done(name):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: min(times[name]) if name in times else None for name in fns}


def progress(message):
    """What the benchmark is doing now, on stderr (the results go to stdout)."""
    print(f"... {message}", file=sys.stderr, flush=True)


def interpolated_chunks(split, inputs, steps, pad=False):
    """The (path, context, target) chunks IG runs for these inputs (zero baseline, Gauss-Legendre
    nodes), built in advance: per length group, x' + a_k (x - x') for every (text, node) pair at
    the group's length, cut into IG's chunks (pad: padded to IG's two chunk sizes, as with XLA)."""
    import tensorflow as tf
    from tig.engine import chunk_cap, chunks, length_groups, pad_rows
    from tig.ig import make_baseline, quadrature
    x, context, token_ids = split.lookup(inputs)
    context = np.asarray(context)
    x0 = make_baseline(split, token_ids, x, "zero")
    nodes, _ = quadrature("gausslegendre", steps)
    out = []
    for length, rows, group in length_groups(split, context, [x, x0, context], 3):
        sample, node = np.repeat(np.arange(len(rows)), steps), np.tile(np.arange(steps), len(rows))
        path = (group[1][sample] + nodes[node, None, None] * (group[0][sample] - group[1][sample])).astype(np.float32)
        for start, size, padded in chunks(len(path), chunk_cap(length, x.shape[2]), pad=pad):
            pick = pad_rows(np.arange(start, start + size), padded)
            out.append((tf.constant(path[pick]), tf.constant(group[2][sample[pick]]), tf.zeros([padded], tf.int32)))
    return out


def floors(split, inputs, steps):
    """Forward+backward over exactly IG's interpolated inputs and chunks, through one None-dim
    graph, graphs traced per length with the number of rows open (IG's without XLA), graphs traced
    on every chunk's exact shape, and the same with XLA (on the padded chunks IG runs with XLA):
    {name: a function that runs it} (XLA cannot run string ops)."""
    import tensorflow as tf
    from tig.engine import gradient_of_target
    work = {pad: interpolated_chunks(split, inputs, steps, pad) for pad in (False, True)}

    def one_graph_per_shape(jit, open_rows=False):   # (a tf.function retracing per shape would warn)
        graphs = {}

        def run(*chunk):
            shape = tuple(tuple(a.shape[1:] if open_rows else a.shape) for a in chunk)
            if shape not in graphs:
                signature = [tf.TensorSpec([None, *a.shape[1:]], a.dtype) for a in chunk] if open_rows else None
                graphs[shape] = tf.function(gradient_of_target(split), jit_compile=jit, input_signature=signature)
            return graphs[shape](*chunk)
        return run

    none_dims = [tf.TensorSpec([None] * len(a.shape), a.dtype) for a in work[False][0]]
    graphs = {"none_dims": (tf.function(gradient_of_target(split), input_signature=none_dims), False),
              "open_rows": (one_graph_per_shape(False, open_rows=True), False),
              "static": (one_graph_per_shape(False), False), "xla": (one_graph_per_shape(True), True)}
    return {f"floor {name}": lambda fn=fn, pad=pad: [fn(*chunk)[0].numpy() for chunk in work[pad]]
            for name, (fn, pad) in graphs.items()}


def time_ig(model, inputs, steps, min_seconds=MIN_SECONDS):
    """IG now (with and without XLA), IG before static shapes, the floors; one dict of numbers."""
    from tig.embedding_split import none_dim_graphs, split_at_embedding
    from tig.ig import integrated_gradients
    split = split_at_embedding(model, inputs)
    before = none_dim_graphs(split)   # one Split, so its graphs are traced once
    n = len(inputs)
    r = {"texts": n, "steps": steps, "padded_length": int(np.shape(split.lookup(inputs[:1])[0])[1])}
    now = {xla: integrated_gradients(model, inputs, steps=steps, xla=xla).scores for xla in (True, False)}
    r["xla_max_relative_difference"] = float(np.abs(now[True] - now[False]).max() / max(np.abs(now[False]).max(), 1e-30))
    before_chunk = max(1, BEFORE_FLOATS_PER_CHUNK // int(np.prod(split.lookup(inputs[:1])[0].shape[1:])))
    times = best_times({
        "ig_seconds": lambda: integrated_gradients(model, inputs, steps=steps, xla=split.padding_invariant),
        "ig_seconds_without_xla": lambda: integrated_gradients(model, inputs, steps=steps, xla=False),
        "before_seconds": lambda: integrated_gradients(before, inputs, steps=steps,
                                                       internal_batch_size=before_chunk),
        **floors(split, inputs, steps)}, min_seconds=min_seconds)
    r.update((name, times.pop(name)) for name in ("ig_seconds", "ig_seconds_without_xla", "before_seconds"))
    r["floors_seconds"] = {name.split()[1]: seconds for name, seconds in times.items()}
    fastest = min(t for t in r["floors_seconds"].values() if t)
    r.update(texts_per_second=n / r["ig_seconds"], before_texts_per_second=n / r["before_seconds"],
             after_over_before_throughput=r["before_seconds"] / r["ig_seconds"],
             ratio_to_fastest_floor=r["ig_seconds"] / fastest, xla=split.padding_invariant)
    return r


def print_ig(r):
    n = r["texts"]
    xla = "with XLA" if r["xla"] else "no XLA (not this project's model)"
    print(f"integrated_gradients, {xla + ':':34s} {r['ig_seconds']:7.3f} s  ({n / r['ig_seconds']:6.1f} texts/s)")
    if r["xla"]:
        print(f"integrated_gradients, {'without XLA:':34s} {r['ig_seconds_without_xla']:7.3f} s  "
              f"({n / r['ig_seconds_without_xla']:6.1f} texts/s)   XLA vs not: max relative difference "
              f"{r['xla_max_relative_difference']:.1e}")
    print(f"before: one None-dim graph, padded length:  {r['before_seconds']:7.3f} s  "
          f"({r['before_texts_per_second']:6.1f} texts/s)   after/before throughput: "
          f"{r['after_over_before_throughput']:.2f}x")
    labels = {"none_dims": "None-dim graph", "open_rows": "static length, rows open", "static": "static shapes",
              "xla": "static shapes + XLA"}
    for name, seconds in r["floors_seconds"].items():
        if seconds:
            print(f"floor, IG's inputs and chunks, {labels[name] + ':':25s} {seconds:7.3f} s   "
                  f"IG / it: {r['ig_seconds'] / seconds:5.2f}")
    print(f"ratio IG / fastest floor: {r['ratio_to_fastest_floor']:.2f}   (1.00: IG costs no more than the bare "
          "forward+backward over its inputs)")


def per_alpha_loop(model, token_ids, steps):
    """The original project's pattern, on a clone (the user's model is never touched): for
    every sample and every alpha, scale the whole embedding matrix, run Keras `predict`,
    then one eager gradient of the predicted class at the scaled embeddings."""
    import keras
    import tensorflow as tf
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    table = clone.get_layer("embedder").get_layer("embedding")
    weights = table.get_weights()[0]
    embedder, head = clone.get_layer("embedder"), clone.get_layer("head")
    for row in token_ids:
        for alpha in np.linspace(0, 1, steps):
            table.set_weights([alpha * weights])
            probs = clone.predict(row[None], verbose=0)
            x, mask = embedder(row[None])
            with tf.GradientTape() as tape:
                tape.watch(x)
                prob = head([x, mask])[0, int(probs.argmax())]
            tape.gradient(prob, x)


def peak_rss_mb():
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_inputs(args):
    from tig.cli import resolve_checkpoint
    from tig.dataset import load_task
    ckpt = resolve_checkpoint(checkpoint=args.checkpoint)
    texts = load_task(ckpt.meta["task"], args.data_dir).test.texts[:args.n]
    return ckpt, ckpt.tokenizer.encode(texts, ckpt.maxlen)


def child_memory(args):
    """Run in a fresh process: peak RSS of one IG call at args.steps steps."""
    from tig.ig import integrated_gradients
    ckpt, ids = load_inputs(args)
    ckpt.model(ids[:1])
    before = peak_rss_mb()
    integrated_gradients(ckpt.model, ids, steps=args.steps)
    print(json.dumps({"rss_before_mb": before, "rss_peak_mb": peak_rss_mb()}))


def checkpoint_extras(args, ckpt, ids):
    """The per-alpha loop, memory at S and 6*S steps, and the quadrature rules' completeness gaps."""
    from tig.ig import integrated_gradients
    n, steps = len(ids), args.steps
    loop_ids = ids[:LOOP_SAMPLES]
    loop_time = best_time(lambda: per_alpha_loop(ckpt.model, loop_ids, steps), repeats=1)

    def median_gap(rule):
        a = integrated_gradients(ckpt.model, ids, steps=steps, rule=rule)
        return float(np.median(np.abs(a.delta) / np.abs(a.output - a.baseline_output)))

    memory = {}
    for s in (steps, 6 * steps):
        out = subprocess.run([sys.executable, __file__, "--child-memory", "--checkpoint", args.checkpoint,
                              "-n", str(n), "--steps", str(s)] +
                             (["--data-dir", args.data_dir] if args.data_dir else []),
                             capture_output=True, text=True, check=True)
        memory[s] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"per_alpha_loop_seconds_scaled": loop_time / (len(loop_ids) * steps) * n * steps,
            "median_relative_gap": {m: median_gap(m) for m in ("gausslegendre", "trapezoid")},
            "peak_rss_mb": {str(s): round(m["rss_peak_mb"]) for s, m in memory.items()},
            "rss_after_load_mb": {str(s): round(m["rss_before_mb"]) for s, m in memory.items()}}


def print_extras(r):
    print(f"per-alpha loop (scaled from {LOOP_SAMPLES} texts): {r['per_alpha_loop_seconds_scaled']:8.1f} s   "
          f"speed-up: {r['speedup_over_per_alpha_loop']:.0f}x")
    for s, peak in r["peak_rss_mb"].items():
        print(f"peak RSS at {s:>4s} steps: {peak:6d} MB  (after loading: {r['rss_after_load_mb'][s]} MB)")
    gaps = r["median_relative_gap"]
    print(f"median |delta| / |F(x)-F(x')| at {r['steps']} steps: Gauss-Legendre {gaps['gausslegendre']:.2%}, "
          f"trapezoid {gaps['trapezoid']:.2%}")


def main():
    import argparse
    from tig.cli import ArgumentParser, float_range, int_range
    from tig.validate import MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/hotel", help="Checkpoint folder whose model is timed.")
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("-n", type=int_range(1), default=None,
                   help=f"Test texts explained per timed run (default: {QUICK_SAMPLES}; {SAMPLES} with --full).")
    p.add_argument("--steps", type=int_range(1, MAX_STEPS), default=STEPS,
                   help=f"IG steps (memory is also measured at 6x this, so at most {MAX_STEPS // 6})")
    p.add_argument("--min-seconds", type=float_range(0, 3600), default=None,
                   help=f"Each timed variant runs at least 3 times and at least this many seconds in total "
                        f"(default: {QUICK_MIN_SECONDS:g}; {MIN_SECONDS:g} with --full).")
    p.add_argument("--full", action="store_true",
                   help="The full measurement of RESULTS.md (several minutes): more texts, longer timing, the "
                        "original per-alpha loop, and peak memory in fresh processes.")
    p.add_argument("--model", default=None, help="a user's .keras model instead of --checkpoint")
    p.add_argument("--vocab", default=None, help="with --model: vocab.txt, one token per line (line number = id)")
    p.add_argument("--tokenizer", default=None, help="with --model: this project's tokenizer.json")
    p.add_argument("--maxlen", type=int_range(1), default=None, help="with --model: input length for an int-input model")
    p.add_argument("--task", default="hotel", help="with --model: the task whose test texts are explained")
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    if args.n is None:
        args.n = SAMPLES if args.full else QUICK_SAMPLES
    if args.min_seconds is None:
        args.min_seconds = MIN_SECONDS if args.full else QUICK_MIN_SECONDS
    if args.child_memory:
        return child_memory(args)       # called with 6x the user's steps
    if args.steps > MAX_STEPS // 6:
        p.error(f"argument --steps: must be at most {MAX_STEPS // 6} (memory is also measured at 6x)")

    if args.model:
        from tig.dataset import load_task
        from tig.user_model import load_user_model
        ckpt = load_user_model(args.model, vocab=args.vocab, tokenizer=args.tokenizer, maxlen=args.maxlen)
        inputs = ckpt.tokenizer.encode(load_task(args.task, args.data_dir).test.texts[:args.n], ckpt.maxlen)
        name = f"model {args.model} ({ckpt.meta['input']} input, {ckpt.meta['output_kind']} output)"
    else:
        ckpt, inputs = load_inputs(args)
        name = f"checkpoint {args.checkpoint} ({ckpt.meta.get('arch')})"
    print(f"{name}: {len(inputs)} test texts x {args.steps} steps = {len(inputs) * args.steps} interpolated "
          f"inputs, {os.cpu_count()} CPU cores")
    results = {"source": args.model or args.checkpoint, **time_ig(ckpt.model, inputs, args.steps, args.min_seconds)}
    print_ig(results)
    if not args.model and args.full:
        progress("the original per-alpha loop, then peak memory in fresh processes")
        results.update(checkpoint_extras(args, ckpt, inputs))
        results["speedup_over_per_alpha_loop"] = results["per_alpha_loop_seconds_scaled"] / results["ig_seconds"]
        print_extras(results)
    print(json.dumps(results))


if __name__ == "__main__":
    from tig.cli import run
    run(main)
