"""Benchmark the command lines' default `--steps auto` against a fixed 50 steps, in one run.

    python bench/bench_steps.py --checkpoint checkpoints/hotel --data-dir ../shared/data

Integrated gradients on the same N test texts (in visualize.py's batches of 32) with steps="auto"
(Gauss-Legendre nodes, 16, 32, ... 512 per text until |delta| <= 1% of |F(x) - F(x')|) and with
steps=50. For each: the fastest of interleaved runs (after an untimed warm-up), the share of texts
within 1% of F(x) - F(x'), the largest |delta| / |F(x) - F(x')| and the mean steps per text; then
the time ratio auto / 50. The last line is all of it as JSON.
"""

from tig.cli import quiet_tensorflow

import json

import numpy as np

SAMPLES = 64
MIN_SECONDS = 5.0    # each variant runs at least 3 times and this long in total (bench.best_times)


def explain_all(model, token_ids, steps):
    """IG in the command line's batches (methods.TEXTS_PER_CALL texts per call)."""
    from tig.ig import integrated_gradients
    from tig.methods import TEXTS_PER_CALL
    return [integrated_gradients(model, token_ids[i:i + TEXTS_PER_CALL], steps=steps)
            for i in range(0, len(token_ids), TEXTS_PER_CALL)]


def completeness(attributions):
    """(share of texts within 1%, largest relative gap, mean steps) over a list of Attributions."""
    gap = np.concatenate([np.abs(a.delta) / np.maximum(np.abs(a.output - a.baseline_output), 1e-12)
                          for a in attributions])
    within = np.concatenate([a.complete() for a in attributions])
    steps = np.concatenate([a.steps for a in attributions])
    return float(within.mean()), float(gap.max()), float(steps.mean())


def parse_args(argv=None):
    from tig.cli import ArgumentParser, float_range, int_range
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="Checkpoint folder of the model to explain.")
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("-n", type=int_range(1), default=SAMPLES, help="Test texts explained.")
    p.add_argument("--min-seconds", type=float_range(0, 3600), default=MIN_SECONDS,
                   help="Each variant is timed at least 3 times and at least this many seconds in total.")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    from bench_ig import best_times, load_inputs
    ckpt, token_ids = load_inputs(args)
    variants = {"auto": lambda: explain_all(ckpt.model, token_ids, "auto"),
                "50": lambda: explain_all(ckpt.model, token_ids, 50)}
    seconds = best_times(variants, min_seconds=args.min_seconds)
    results = {"checkpoint": ckpt.directory, "samples": len(token_ids), "ratio_auto_over_50": None}
    for name, fn in variants.items():
        within, worst, mean_steps = completeness(fn())
        results[name] = {"seconds": seconds[name], "within_1pct": within, "worst_gap": worst, "mean_steps": mean_steps}
        print(f"steps={name:>4}: {seconds[name]:.3f} s for {len(token_ids)} texts; within 1%: {within:.0%} of texts; "
              f"largest |delta|/|F(x)-F(x')|: {worst:.4f}; mean steps {mean_steps:.1f}")
    if seconds["auto"] and seconds["50"]:
        results["ratio_auto_over_50"] = seconds["auto"] / seconds["50"]
        print(f"time auto / 50: {results['ratio_auto_over_50']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    from tig.cli import run
    run(main)
