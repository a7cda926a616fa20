"""bench_train.py: one run trains with and without XLA and reports a ratio that comes from that run.
Speed itself is measured by running bench_train.py (RESULTS.md), never here."""
import json
import math


from test_cli import assert_clean_failure, in_process, run

# the fixture's 136 hotel training rows in 8 batches of 17: one batch shape, so XLA compiles once
TINY = ("--task", "hotel", "--timed-steps", "3", "--repeats", "2", "--batch-size", "17", "--hidden", "8", "--embed-dim", "8")


def test_bench_train_times_both_settings_in_one_run(capsys, data_dir):
    import bench_train
    result = in_process(capsys, bench_train.main, *TINY, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    numbers = json.loads(lines[-1])
    off, on = numbers["no_xla"], numbers["xla"]
    for r in (off, on):
        assert len(r["seconds_per_step"]) == 2 and all(s > 0 for s in r["seconds_per_step"])
        assert r["best_seconds_per_step"] == min(r["seconds_per_step"])
        assert r["warmup_steps"] == 136 // 17 and r["trained_steps"] == 8 + 2 * 3
        assert math.isfinite(r["final_train_loss"]) and 0 <= r["val_accuracy"] <= 1
    # one ratio per timed pair (XLA over no XLA, measured in this run), and the median is printed
    assert len(numbers["xla_over_no_xla_per_pair"]) == 2 and all(r > 0 for r in numbers["xla_over_no_xla_per_pair"])
    assert f"median {numbers['xla_over_no_xla_median']:.3f}" in result.stdout
    # same seed, same batches: XLA only reorders float operations
    assert abs(on["final_train_loss"] - off["final_train_loss"]) < 0.05 * off["final_train_loss"]
    assert numbers["train_loss_difference"] == on["final_train_loss"] - off["final_train_loss"]


def test_bench_train_bad_input_is_one_line(capsys, data_dir, tmp_path):
    import bench_train
    result = run("bench/bench_train.py", "--task", "tweets", "--data-dir", data_dir)   # the real __main__ path
    assert_clean_failure(result, "unknown task 'tweets'")
    assert result.returncode == 2
    in_process(capsys, bench_train.main, *TINY, "--timed-steps", "0").expect("--timed-steps", 2)
    in_process(capsys, bench_train.main, "--task", "weibo", "--data-dir", str(tmp_path)).expect("not found", 1)
