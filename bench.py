"""Benchmark integrated_gradients against its floor and against the original per-alpha loop.

    python bench.py --checkpoint checkpoints/hotel --data-dir ../shared/data
    python bench.py --model my_model.keras [--vocab vocab.txt | --tokenizer tokenizer.json] --task hotel

With --model (any Keras 3 classifier, see user_model.py) it prints only IG time, the floor
and their ratio (texts: the task's test split).

Prints, measured in this one run on the same texts:
  - IG time for N samples x S steps (default 64 x 50)
  - the floors: one batched forward+backward pass over the same N*S interpolated inputs, through
    a None-dim tf.function, traced on the concrete shape, and the same with XLA
  - IG time / the fastest floor (goal <= 1.2)
  - before/after throughput (texts/s): IG on the None-dim graphs (exact shapes, no XLA: the path
    before static shapes, still used for other models) vs IG as it runs now
  - the speed-up over the original project's way: one model call per sample per alpha
    (timed on a few samples, per input, and scaled to N*S inputs)
  - peak memory (RSS) of IG at S steps and at 6*S steps, each in a fresh process
  - the completeness error of Gauss-Legendre vs the trapezoid rule at S steps
"""
import os

from cli import quiet_tensorflow

quiet_tensorflow()   # before anything imports TensorFlow: keeps the command line output clean

import json
import resource
import subprocess
import sys
import time

import numpy as np

SAMPLES = 64
STEPS = 50
REPEATS = 3
LOOP_SAMPLES = 2     # the per-alpha loop is slow: time it on this many samples


def best_time(fn, repeats=REPEATS):
    fn()   # warm-up: traces tf.functions
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def load_inputs(args):
    from cli import resolve_checkpoint
    from dataset import load_task
    ckpt = resolve_checkpoint(checkpoint=args.checkpoint)
    texts = load_task(ckpt.meta["task"], args.data_dir).test.texts[:args.samples]
    return ckpt, ckpt.tokenizer.encode(texts, ckpt.maxlen)


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


def time_floors(model, inputs, steps):
    """Forward+backward over exactly the N*S interpolated inputs IG uses (zero baseline; PAD
    positions keep their embedding), built in advance, timed three ways: through a None-dim
    traced gradient function in one batch (the old floor), and streamed in IG's chunk size
    (gradients.chunk_cap) traced on the concrete shapes, without and with XLA (jit_compile).
    Returns ({name: seconds or None if it cannot run}, max relative difference
    of the XLA gradients from the None-dims ones)."""
    import tensorflow as tf
    from gradients import bucket_length, chunk_cap, target_gradient_fn, tile_batch
    from integrated_gradients import quadrature
    from model import split_at_embedding
    split = split_at_embedding(model, inputs=inputs)
    x, context, token_ids = split.lookup(inputs)
    x0 = np.where((token_ids == 0)[..., None], x, 0).astype(np.float32)
    nodes, _ = quadrature("gausslegendre", steps)
    path = tf.constant(np.concatenate([x0 + a * (x - x0) for a in nodes]), tf.float32)
    path_context = tile_batch(tf.constant(np.asarray(context)), steps)
    target = tf.zeros([len(path)], tf.int32)
    grad_fn = target_gradient_fn(split)
    times = {"none_dims": best_time(lambda: grad_fn(path, path_context, target)[0].numpy())}
    reference = grad_fn(path, path_context, target)[0].numpy()
    xla_error = None
    for name, jit in (("static", False), ("xla", True)):
        @tf.function(jit_compile=jit)     # no input_signature: traced on these concrete shapes
        def fn(embeddings, context, target):
            with tf.GradientTape() as tape:
                tape.watch(embeddings)
                selected = tf.gather(split.head(embeddings, context), target, axis=1, batch_dims=1)
            return tape.gradient(selected, embeddings)
        cap = chunk_cap(bucket_length(path.shape[1]), path.shape[2])

        def streamed():
            return np.concatenate([fn(path[s:s + cap], path_context[s:s + cap], target[s:s + cap]).numpy()
                                   for s in range(0, len(path), cap)])
        try:
            times[name] = best_time(streamed)
        except Exception as e:        # e.g. string ops have no XLA kernel
            print(f"{name} floor cannot run: {e.__class__.__name__}: {str(e).splitlines()[0][:120]}")
            times[name] = None
            continue
        if jit:
            got = streamed()
            xla_error = float(np.abs(got - reference).max() / max(np.abs(reference).max(), 1e-30))
    return times, xla_error


def print_floors(ig_time, floors, xla_error):
    fastest = min(t for t in floors.values() if t)
    for name, label in (("none_dims", "None-dim tf.function, as IG"), ("static", "static, IG's chunks"), ("xla", "static + XLA, IG's chunks")):
        if floors.get(name):
            print(f"floor, {label + ':':28s} {floors[name]:8.3f} s   IG / it: {ig_time / floors[name]:5.2f}")
    print(f"ratio IG / fastest floor:    {ig_time / fastest:8.2f}   (goal <= 1.2)")
    if xla_error is not None:
        print(f"XLA gradients vs non-XLA: max relative difference {xla_error:.1e}")
    return fastest


def bench_user_model(args):
    """IG time / floor for a user's .keras model (goal <= 1.2)."""
    from dataset import load_task
    from integrated_gradients import integrated_gradients
    from user_model import load_user_model
    ckpt = load_user_model(args.model, vocab=args.vocab, tokenizer=args.tokenizer, maxlen=args.maxlen)
    texts = load_task(args.task, args.data_dir).test.texts[:args.samples]
    inputs = ckpt.tokenizer.encode(texts, ckpt.maxlen)
    n, steps = len(texts), args.steps
    print(f"model {args.model} ({ckpt.meta['input']} input, {ckpt.meta['output_kind']} output), {n} {args.task} "
          f"test texts x {steps} steps = {n * steps} interpolated inputs, {os.cpu_count()} CPU cores")
    ig_time = best_time(lambda: integrated_gradients(ckpt.model, inputs, steps=steps))
    floors, xla_error = time_floors(ckpt.model, inputs, steps)
    print(f"integrated_gradients:        {ig_time:8.3f} s   ({n / ig_time:.1f} texts/s)")
    fastest = print_floors(ig_time, floors, xla_error)
    print(json.dumps({"model": args.model, "ig_seconds": ig_time, "floor_seconds": floors,
                      "ratio_to_floor": ig_time / floors["none_dims"], "ratio_to_fastest_floor": ig_time / fastest,
                      "xla_max_relative_difference": xla_error}))


def peak_rss_mb():
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(args):
    """Run in a fresh process: peak RSS of one IG call at args.steps steps."""
    from integrated_gradients import integrated_gradients
    ckpt, ids = load_inputs(args)
    ckpt.model(ids[:1])
    before = peak_rss_mb()
    integrated_gradients(ckpt.model, ids, steps=args.steps)
    print(json.dumps({"rss_before_mb": before, "rss_peak_mb": peak_rss_mb()}))


def main():
    import argparse
    from cli import ArgumentParser, int_range
    from integrated_gradients import MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/hotel")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int_range(1), default=SAMPLES)
    p.add_argument("--steps", type=int_range(1, MAX_STEPS), default=STEPS,
                   help=f"IG steps (memory is also measured at 6x this, so at most {MAX_STEPS // 6})")
    p.add_argument("--model", default=None, help="a user's .keras model instead of --checkpoint")
    p.add_argument("--vocab", default=None, help="with --model: vocab.txt, one token per line (line number = id)")
    p.add_argument("--tokenizer", default=None, help="with --model: this project's tokenizer.json")
    p.add_argument("--maxlen", type=int_range(1), default=None, help="with --model: input length for an int-input model")
    p.add_argument("--task", default="hotel", help="with --model: the task whose test texts are explained")
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_memory:
        return child_memory(args)       # called with 6x the user's steps
    if args.steps > MAX_STEPS // 6:
        p.error(f"argument --steps: must be at most {MAX_STEPS // 6} (memory is also measured at 6x)")

    if args.model:
        return bench_user_model(args)
    from gradients import XLA, exact_shapes
    from integrated_gradients import integrated_gradients
    from model import split_at_embedding
    ckpt, ids = load_inputs(args)
    n, steps = len(ids), args.steps
    inputs = n * steps
    print(f"checkpoint {args.checkpoint} ({ckpt.meta.get('arch')}), {n} samples x {steps} steps = {inputs} "
          f"interpolated inputs of length {ids.shape[1]}, {os.cpu_count()} CPU cores")

    ig_time = best_time(lambda: integrated_gradients(ckpt.model, ids, steps=steps))
    old_time = best_time(lambda: integrated_gradients(exact_shapes(split_at_embedding(ckpt.model)), ids, steps=steps))

    floors, xla_error = time_floors(ckpt.model, ids, steps)
    floor_time = floors["none_dims"]
    fastest = min(t for t in floors.values() if t)

    loop_ids = ids[:LOOP_SAMPLES]
    loop_time = best_time(lambda: per_alpha_loop(ckpt.model, loop_ids, steps), repeats=1)
    loop_scaled = loop_time / (len(loop_ids) * steps) * inputs

    def median_gap(method):
        a = integrated_gradients(ckpt.model, ids, steps=steps, method=method)
        return float(np.median(np.abs(a.delta) / np.abs(a.output - a.baseline_output)))
    gaps = {method: median_gap(method) for method in ("gausslegendre", "trapezoid")}

    memory = {}
    for s in (steps, 6 * steps):
        out = subprocess.run([sys.executable, __file__, "--child-memory", "--checkpoint", args.checkpoint,
                              "--samples", str(n), "--steps", str(s)] +
                             (["--data-dir", args.data_dir] if args.data_dir else []),
                             capture_output=True, text=True, check=True)
        memory[s] = json.loads(out.stdout.strip().splitlines()[-1])

    results = {
        "ig_seconds": ig_time, "floor_seconds": floor_time, "ratio_to_floor": ig_time / floor_time,
        "floors_seconds": floors, "ratio_to_fastest_floor": ig_time / fastest, "xla_max_relative_difference": xla_error,
        "texts_per_second": n / ig_time, "old_path_seconds": old_time, "old_path_texts_per_second": n / old_time,
        "speedup_over_old_path": old_time / ig_time, "xla": XLA,
        "per_alpha_loop_seconds_scaled": loop_scaled, "speedup_over_per_alpha_loop": loop_scaled / ig_time,
        "peak_rss_mb": {str(s): round(m["rss_peak_mb"]) for s, m in memory.items()},
        "rss_after_load_mb": {str(s): round(m["rss_before_mb"]) for s, m in memory.items()},
        "median_relative_gap": gaps,
    }
    print(f"integrated_gradients:        {ig_time:8.3f} s   ({n / ig_time:.1f} texts/s; static shapes, XLA {'on' if XLA else 'off (TIG_XLA=0)'})")
    print(f"before: None-dim graphs:     {old_time:8.3f} s   ({n / old_time:.1f} texts/s)   after/before throughput: "
          f"{old_time / ig_time:.2f}x  (goal >= 2)")
    print(f"floor (one fwd+bwd batch):   {floor_time:8.3f} s")
    print(f"ratio IG / floor:            {ig_time / floor_time:8.2f}")
    print_floors(ig_time, floors, xla_error)
    print(f"per-alpha loop (scaled from {len(loop_ids)} samples): {loop_scaled:8.1f} s")
    print(f"speed-up over per-alpha loop: {loop_scaled / ig_time:7.0f}x  (goal >= 500x)")
    for s, m in memory.items():
        print(f"peak RSS at {s:4d} steps:       {m['rss_peak_mb']:8.0f} MB  (after loading: {m['rss_before_mb']:.0f} MB)")
    print(f"median |delta| / |F(x)-F(x')| at {steps} steps: Gauss-Legendre {gaps['gausslegendre']:.2%}, "
          f"trapezoid {gaps['trapezoid']:.2%} ({gaps['trapezoid'] / gaps['gausslegendre']:.0f}x larger)")
    print(json.dumps(results))


if __name__ == "__main__":
    from cli import run
    run(main)
