"""Command lines: bad input gives one clear line and a non-zero exit, never a traceback."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, write_csv


def run(*args, env=None):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=full_env,
                          timeout=300)


class in_process:
    """Run a script's main() in this process, exactly as its __main__ does (through cli.run), and
    capture its exit status, stdout and stderr: the same checks as on `run`, without starting Python
    and TensorFlow again. Each CLI keeps at least one test through `run` for its real __main__ path."""

    def __init__(self, capsys, main, *args):
        from tig import cli
        capsys.readouterr()                  # only what this run prints
        saved, sys.argv = sys.argv, ["prog", *args]
        try:
            cli.run(main)
            code = 0
        except SystemExit as stop:
            code = stop.code
        finally:
            sys.argv = saved
        captured = capsys.readouterr()
        self.stdout, self.stderr = captured.out, captured.err
        if isinstance(code, str):      # sys.exit("error: ...") prints it and exits 1
            code, self.stderr = 1, self.stderr + code + "\n"
        self.returncode = 0 if code is None else code

    def expect(self, fragment, status):
        assert self.returncode == status, (self.returncode, self.stderr)
        assert "Traceback" not in self.stderr and fragment in self.stderr, self.stderr
        assert len([line for line in self.stderr.splitlines() if line.strip()]) == 1, self.stderr


def assert_clean_failure(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, result.stderr    # argparse prints usage + error; ours prints one line
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_unknown_task(capsys):
    import train
    assert_clean_failure(in_process(capsys, train.main, "--task", "tweets"), "unknown task 'tweets'")


def test_missing_data_file(tmp_path, capsys):
    import train
    result = in_process(capsys, train.main, "--task", "weibo", "--data-dir", str(tmp_path))
    assert_clean_failure(result, "weibo_senti_100k.csv", "not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_label_row(tmp_path, capsys):
    import train
    write_csv(tmp_path / "simplifyweibo_4_moods.csv", [(0, "开心"), (7, "难过")])
    result = in_process(capsys, train.main, "--task", "moods", "--data-dir", str(tmp_path))
    assert_clean_failure(result, "line 3", "label '7'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_cli_end_to_end(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    result = run("train.py", "--task", "thucnews", "--data-dir", data_dir, "--out", str(out), "--epochs", "2",
                 "--maxlen", "16", "--min-freq", "1", "--verbose", "0")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    from tig.checkpoint import current_version
    assert sorted(os.listdir(current_version(str(out)))) == ["meta.json", "metrics.json", "model.keras",
                                                             "tokenizer.json"]
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr


def test_word_level_model_trains_and_explains(data_dir, tmp_path, capsys):
    import train
    import visualize
    out = tmp_path / "word"
    result = in_process(capsys, train.main, "--task", "hotel", "--data-dir", data_dir, "--out", str(out), "--word",
                        "--epochs", "3", "--maxlen", "12", "--min-freq", "1", "--verbose", "0")
    assert result.returncode == 0, result.stderr
    result = in_process(capsys, visualize.main, "--checkpoint", str(out), "--text", "房间很干净", "--format", "md",
                        "--out", str(tmp_path / "vis"))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "vis" / "explanations.md").read_text(encoding="utf-8")
    assert ">房间</font>" in md          # one span per jieba word


def test_visualize_misclassified_samples(tiny_checkpoints, data_dir, tmp_path, capsys):
    import visualize
    # the same texts with every label flipped: the model now "misclassifies" every test text
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    with open(os.path.join(data_dir, "ChnSentiCorp_htl_all.csv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split(",", 1) for line in f][1:]
    write_csv(flipped / "ChnSentiCorp_htl_all.csv", [(1 - int(label), text) for label, text in rows])
    result = in_process(capsys, visualize.main, "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", str(flipped),
                        "--task", "hotel", "-n", "3", "--errors", "--format", "md", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    captions = re.findall(r"<sub>label (\w+) · predicted (\w+)", (tmp_path / "out" / "explanations.md").read_text(
        encoding="utf-8"))
    assert len(captions) == 3 and all(label != predicted for label, predicted in captions)
    # labels the model gets right on every text (its own predictions): nothing to show, and the run
    # says so in one line
    from tig.checkpoint import load_checkpoint
    agreed = tmp_path / "agreed"
    agreed.mkdir()
    from tig import explanations
    predicted = explanations.predict_probabilities(load_checkpoint(tiny_checkpoints["cnn"]), [t for _, t in rows]).argmax(1)
    write_csv(agreed / "ChnSentiCorp_htl_all.csv", [(int(p), text) for p, (_, text) in zip(predicted, rows)])
    result = in_process(capsys, visualize.main, "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", str(agreed),
                        "--task", "hotel", "-n", "3", "--errors", "--out", str(tmp_path / "none"))
    assert_clean_failure(result, "no misclassified texts")


def test_bench_runs_and_reports_every_number(tiny_checkpoints, data_dir):
    import json
    result = run("bench/bench_ig.py", "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", data_dir, "-n", "4",
                 "--steps", "4", "--min-seconds", "0", "--full")
    assert result.returncode == 0, result.stderr
    # progress on stderr, no warnings; results are measurements, not goals that read like failures
    assert "... warming up ig_seconds" in result.stderr and "... timing" in result.stderr
    assert "warning" not in result.stderr.lower() and "retrac" not in result.stderr.lower(), result.stderr
    assert "goal" not in result.stdout
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    floors = numbers["floors_seconds"]
    assert set(floors) == {"none_dims", "open_rows", "static", "xla"} and all(t > 0 for t in floors.values())
    assert numbers["ratio_to_fastest_floor"] > 0 and numbers["after_over_before_throughput"] > 0
    assert numbers["speedup_over_per_alpha_loop"] > 0 and numbers["xla_max_relative_difference"] <= 1e-5
    assert set(numbers["peak_rss_mb"]) == {"4", "24"}
    assert set(numbers["median_relative_gap"]) == {"gausslegendre", "trapezoid"}
