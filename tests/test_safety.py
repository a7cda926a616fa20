"""Nothing a user has on disk is lost, and every bad input ends in one line and a non-zero exit.

Each test is a probe a careless user could make; it asserts the exit status, the one-line
message, the absence of a traceback, and that no file was lost or changed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ROOT, write_csv
from test_cli import assert_clean_failure, in_process, run


def one_line(result, *fragments, status=None):
    assert_clean_failure(result, *fragments)
    if status is not None:
        assert result.returncode == status, (result.returncode, result.stderr)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def snapshot(folder):
    """{relative path: bytes} of every file below folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


TRAIN = ("train.py", "--task", "hotel", "--epochs", "1", "--maxlen", "16", "--min-freq", "1", "--verbose", "0")


# --- train.py --out never deletes what it did not write ------------------------------------------

def train_probe(capsys, *args):
    """train.py's main() run here with TRAIN's arguments and `args`: its exit, stdout and stderr."""
    import train
    return in_process(capsys, train.main, *TRAIN[1:], *args)


def test_out_that_is_a_file_is_refused(data_dir, tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("my notes", encoding="utf-8")
    one_line(train_probe(capsys, "--data-dir", data_dir, "--out", str(victim)), "existing file", status=1)
    assert victim.read_text(encoding="utf-8") == "my notes"


def test_out_that_is_a_folder_of_experiments_is_refused(data_dir, tmp_path, tiny_checkpoints, capsys):
    experiments = tmp_path / "runs" / "exp"
    shutil.copytree(tiny_checkpoints["cnn"], experiments / "x")
    (experiments / "results.txt").write_text("keep me", encoding="utf-8")
    before = snapshot(experiments)
    one_line(train_probe(capsys, "--data-dir", data_dir, "--out", str(experiments)),
             "not a checkpoint of this project", status=1)
    assert snapshot(experiments) == before


def test_out_dot_in_a_git_repository_leaves_it_intact(data_dir, tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "code.py").write_text("print('hi')\n", encoding="utf-8")
    before = snapshot(repo)
    monkeypatch.chdir(repo)
    one_line(train_probe(capsys, "--data-dir", data_dir, "--out", "."), "not a checkpoint of this project", status=1)
    assert snapshot(repo) == before


@pytest.mark.parametrize("flag,value,fragment", [
    ("--epochs", "0", "--epochs"), ("--batch-size", "0", "--batch-size"), ("--maxlen", "-3", "--maxlen"),
    ("--maxlen", "0", "--maxlen"), ("--dropout", "1.5", "--dropout"), ("--hidden", "0", "--hidden"),
    ("--lr", "nan", "--lr"), ("--lr", "0", "--lr"), ("--limit", "0", "--limit"), ("--embed-dim", "0", "--embed-dim"),
    ("--arch", "gpt", "unknown architecture"), ("--task", "tweets", "unknown task"), ("--epochs", "2.5", "integer"),
])
def test_train_usage_errors(data_dir, capsys, flag, value, fragment):
    import train
    in_process(capsys, train.main, *TRAIN[1:], "--data-dir", data_dir, flag, value).expect(fragment, status=2)


def test_usage_errors_from_a_real_process(data_dir):
    # the probes above run in this process (TensorFlow starts once); this one proves the real CLI
    one_line(run(*TRAIN, "--data-dir", data_dir, "--epochs", "0"), "--epochs", status=2)


def test_empty_out_is_refused(data_dir, capsys):
    one_line(train_probe(capsys, "--data-dir", data_dir, "--out", ""), "must not be empty", status=1)


def test_replacing_a_checkpoint_keeps_one_version_and_follows_the_umask(tiny_checkpoints, tmp_path):
    from tig.checkpoint import POINTER_FILE, current_version, load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    target = str(tmp_path / "ckpt")
    old_umask = os.umask(0o022)
    try:
        save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": 1})
        save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": 2})
    finally:
        os.umask(old_umask)
    assert load_checkpoint(target).metrics == {"run": 2}
    names = sorted(os.listdir(target))
    assert names[:2] == [".lock", POINTER_FILE] and len(names) == 3 and names[2].startswith("v-")
    assert os.stat(current_version(target)).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(current_version(target), "meta.json")).st_mode & 0o777 == 0o644


def test_older_flat_checkpoints_load_and_are_replaced_in_place(tiny_checkpoints, tmp_path):
    from tig.checkpoint import current_version, load_checkpoint, save_checkpoint
    flat = tmp_path / "flat"
    shutil.copytree(current_version(tiny_checkpoints["cnn"]), flat)   # the four files, no pointer
    ckpt = load_checkpoint(str(flat))
    save_checkpoint(str(flat), ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": "new"})
    assert load_checkpoint(str(flat)).metrics == {"run": "new"}
    assert "model.keras" not in os.listdir(flat)


SAVER = textwrap.dedent("""
    import os, signal, sys
    from tig.cli import quiet_tensorflow
    quiet_tensorflow()
    from tig import checkpoint, files
    from tig.tokenizer import Tokenizer
    source, target, point, how = sys.argv[1:5]
    ckpt = checkpoint.load_checkpoint(source)

    def die():
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise KeyboardInterrupt   # what SIGINT raises in Python

    if point == "writing":          # while the new version's files are being written
        Tokenizer.save = lambda self, path: die()
    elif point == "renamed":        # the new version is complete, the pointer still names the old one
        real_rename = os.rename
        def rename(a, b):
            real_rename(a, b)
            die()
        os.rename = rename
    elif point == "pointer":        # inside the atomic replacement of the pointer file
        def atomic_write(path, data):
            open(path + ".tmp-half", "w").write("v-")
            die()
        checkpoint.atomic_write = atomic_write
    checkpoint.save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": "interrupted"})
""")


@pytest.mark.parametrize("how", ["kill", "interrupt"])
@pytest.mark.parametrize("point", ["writing", "renamed", "pointer"])
def test_a_save_killed_at_any_point_leaves_the_previous_checkpoint(tiny_checkpoints, tmp_path, point, how):
    from tig.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    target = str(tmp_path / "ckpt")
    save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": "previous"})
    script = tmp_path / "saver.py"
    script.write_text(SAVER, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), tiny_checkpoints["cnn"], target, point, how],
                            capture_output=True, text=True, timeout=300)
    # an uncaught KeyboardInterrupt ends Python by SIGINT, as Ctrl-C would
    assert result.returncode == (-signal.SIGKILL if how == "kill" else -signal.SIGINT), result.stderr
    assert load_checkpoint(target).metrics == {"run": "previous"}
    # the next save cleans what the dead one left, and only that
    save_checkpoint(target, ckpt.model, ckpt.tokenizer, ckpt.meta, {"run": "next"})
    assert load_checkpoint(target).metrics == {"run": "next"}
    assert len(os.listdir(target)) == 3, os.listdir(target)


def test_a_training_killed_by_sigint_keeps_the_checkpoint(tiny_checkpoints, data_dir, tmp_path):
    from tig.checkpoint import load_checkpoint
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints["cnn"], target)
    before = snapshot(target)
    proc = subprocess.Popen([sys.executable, *TRAIN, "--data-dir", data_dir, "--out", str(target), "--epochs", "500",
                             "--patience", "500"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stderr:           # wait until training is about to start, then press Ctrl-C
        if line.startswith("vocabulary"):
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 1 and err.strip().splitlines()[-1] == "interrupted", err
    assert snapshot(target) == before
    load_checkpoint(str(target))


def test_two_concurrent_trainings_on_one_out(data_dir, tmp_path):
    from tig.checkpoint import load_checkpoint
    out = str(tmp_path / "shared")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, *TRAIN, "--data-dir", data_dir, "--out", out, "--seed", str(seed)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
    ckpt = load_checkpoint(out)
    assert ckpt.meta["seed"] in (1, 2)
    assert len(os.listdir(out)) == 3, os.listdir(out)


# --- data ----------------------------------------------------------------------------------

def test_an_unclosed_quote_stops_loading_at_its_line(tmp_path, capsys):
    rows = [(i % 2, f"第{i}条微博，内容{'好' if i % 2 else '差'}") for i in range(1500)]
    path = tmp_path / "weibo_senti_100k.csv"
    write_csv(path, rows)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[100] = lines[100].replace(",", ',"', 1)      # row 100 opens a quote and never closes it
    path.write_text("".join(lines), encoding="utf-8")
    import train
    result = in_process(capsys, train.main, "--task", "weibo", "--data-dir", str(tmp_path), "--epochs", "1")
    one_line(result, "line 101", "unclosed quote", status=1)


@pytest.mark.parametrize("rows,fragment", [
    ([(1, "好"), (0, "差")], "too few"),
    ([(1, f"好评{i}") for i in range(40)], "at least 2 classes"),
    ([(1, "好"), ("-0", "差")], "label '-0'"),
    ([(1, "好", "多余的列")], "expected 2 fields"),
])
def test_implausible_data_is_an_error(tmp_path, capsys, rows, fragment):
    import train
    write_csv(tmp_path / "ChnSentiCorp_htl_all.csv", rows)
    one_line(in_process(capsys, train.main, "--task", "hotel", "--data-dir", str(tmp_path)), fragment, status=1)


def test_thucnews_in_gbk_and_duplicate_classes(data_dir, tmp_path, capsys):
    import train
    folder = tmp_path / "gbk" / "thucnews"
    shutil.copytree(os.path.join(data_dir, "thucnews"), folder)
    text = (folder / "train.txt").read_text(encoding="utf-8")
    (folder / "train.txt").write_bytes(text.encode("gbk"))
    one_line(in_process(capsys, train.main, "--task", "thucnews", "--data-dir", str(tmp_path / "gbk")), "not UTF-8",
             status=1)
    (folder / "train.txt").write_text(text, encoding="utf-8")
    (folder / "class.txt").write_text("finance\nsports\nfinance\n", encoding="utf-8")
    one_line(in_process(capsys, train.main, "--task", "thucnews", "--data-dir", str(tmp_path / "gbk")),
             "duplicate class", status=1)


def test_training_that_diverges_saves_nothing(data_dir, tmp_path, monkeypatch):
    from tig import model
    import train
    from tig.errors import UserError
    real_build = model.build_model

    def poisoned(*args, **kwargs):
        built = real_build(*args, **kwargs)
        table = built.get_layer("embedder").get_layer("embedding")
        table.set_weights([np.full(table.get_weights()[0].shape, np.nan, np.float32)])
        return built
    monkeypatch.setattr(model, "build_model", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(UserError, match="diverged"):
        train.main(list(TRAIN[1:]) + ["--data-dir", data_dir, "--out", str(out)])
    assert not out.exists()


# --- checkpoints that do not belong together ---------------------------------------------------

def test_task_mismatch_is_refused(tiny_checkpoints, data_dir, capsys):
    import evaluate
    import visualize
    result = in_process(capsys, visualize.main, "--task", "thucnews", "--checkpoint", tiny_checkpoints["cnn"], "-n",
                        "3", "--data-dir", data_dir)
    one_line(result, "trained for task 'hotel', not 'thucnews'", "python train.py --task thucnews", status=1)
    result = in_process(capsys, evaluate.main, "--task", "weibo", "--checkpoint", tiny_checkpoints["cnn"],
                        "--data-dir", data_dir)
    one_line(result, "trained for task 'hotel'", status=1)


def visualize_probe(capsys, *args):
    import visualize
    return in_process(capsys, visualize.main, *args)


def test_a_shuffled_tokenizer_of_the_same_size_is_refused(tiny_checkpoints, tmp_path, capsys):
    from tig.checkpoint import current_version
    bad = tmp_path / "shuffled"
    shutil.copytree(tiny_checkpoints["cnn"], bad)
    path = os.path.join(current_version(str(bad)), "tokenizer.json")
    data = json.load(open(path, encoding="utf-8"))
    data["vocab"][5], data["vocab"][6] = data["vocab"][6], data["vocab"][5]
    json.dump(data, open(path, "w", encoding="utf-8"), ensure_ascii=False)
    one_line(visualize_probe(capsys, "--checkpoint", str(bad), "--text", "好"), "not the vocabulary", status=1)


@pytest.mark.parametrize("change,fragment", [
    (lambda m: m.pop("maxlen"), "no field 'maxlen'"),
    (lambda m: m.update(maxlen="24"), "field 'maxlen' must be an integer"),
    (lambda m: m.update(classes=["a", "a"]), "field 'classes'"),
    (lambda m: m.update(task=3), "field 'task'"),
])
def test_every_meta_field_is_validated(tiny_checkpoints, tmp_path, capsys, change, fragment):
    from tig.checkpoint import current_version
    bad = tmp_path / "meta"
    shutil.copytree(tiny_checkpoints["cnn"], bad)
    path = os.path.join(current_version(str(bad)), "meta.json")
    meta = json.load(open(path, encoding="utf-8"))
    change(meta)
    json.dump(meta, open(path, "w", encoding="utf-8"))
    one_line(visualize_probe(capsys, "--checkpoint", str(bad), "--text", "好"), "meta.json", fragment, status=1)


# --- visualize, evaluate and bench arguments -----------------------------------------------------

@pytest.mark.parametrize("args,fragment,status", [
    (("--steps", "100000"), "--steps", 2), (("--steps", "0"), "--steps", 2),
    (("--baseline", "foo"), "unknown baseline", 2), (("--target", "²"), "unknown target", 1),
    (("--format", ","), "--format", 2), (("--method", "lime"), "unknown method", 2),
])
def test_visualize_bad_arguments(tiny_checkpoints, tmp_path, capsys, args, fragment, status):
    import visualize
    in_process(capsys, visualize.main, "--checkpoint", tiny_checkpoints["cnn"], "--text", "好", "--out",
               str(tmp_path / "o"), *args).expect(fragment, status)
    assert not (tmp_path / "o").exists()


def test_visualize_bad_text_files(tiny_checkpoints, tmp_path, capsys):
    ckpt = tiny_checkpoints["cnn"]
    (tmp_path / "gbk.txt").write_bytes("房间很干净".encode("gbk"))
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01\x02abc\n")
    for path, fragment in ((tmp_path / "gbk.txt", "not UTF-8"), (tmp_path / "binary.bin", "binary"),
                           (tmp_path, "is a folder")):
        one_line(visualize_probe(capsys, "--checkpoint", ckpt, "--file", str(path)), fragment, status=1)


def test_visualize_never_overwrites_foreign_files(tiny_checkpoints, tmp_path, capsys):
    ckpt = tiny_checkpoints["cnn"]
    existing_file = tmp_path / "report"
    existing_file.write_text("mine", encoding="utf-8")
    one_line(visualize_probe(capsys, "--checkpoint", ckpt, "--text", "好", "--out", str(existing_file)),
             "existing file", status=1)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "explanations.html").write_text("my own page", encoding="utf-8")
    one_line(visualize_probe(capsys, "--checkpoint", ckpt, "--text", "好", "--out", str(folder)),
             "refusing to overwrite", status=1)
    assert (folder / "explanations.html").read_text(encoding="utf-8") == "my own page"
    # only an explicit --replace overwrites them (how asset/ is regenerated); the folder stays unmarked
    result = visualize_probe(capsys, "--checkpoint", ckpt, "--text", "好", "--out", str(folder), "--format", "html",
                             "--replace")
    assert result.returncode == 0, result.stderr
    assert "my own page" not in (folder / "explanations.html").read_text(encoding="utf-8")
    assert sorted(os.listdir(folder)) == ["explanations.html"]
    # a folder visualize made itself is updated in place, run after run
    ours = tmp_path / "ours"
    for _ in range(2):
        result = visualize_probe(capsys, "--checkpoint", ckpt, "--text", "好", "--out", str(ours), "--format", "md,html")
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(ours)) == [".tig-output", "explanations.html", "explanations.md"]


def test_terminal_output_has_no_control_characters_from_texts(tiny_checkpoints, tmp_path, capsys):
    result = visualize_probe(capsys, "--checkpoint", tiny_checkpoints["cnn"], "--text", "好\x1b[2J\x07很\n\n差",
                             "--format", "ansi,md", "--color", "never", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    md = (tmp_path / "explanations.md").read_text(encoding="utf-8")
    assert "\n\n\n" not in md and "\x1b" not in md    # a blank line inside a text no longer breaks the Markdown


def test_png_labels_are_never_mathtext(tmp_path):
    from tig.plots import to_png
    from tig.render import Explanation
    expl = Explanation(text="好差", units=["好", "差"], scores=np.array([1.0, -1.0], np.float32),
                       unknown=[False, False], method="ig", target="$x^{2}$", predicted="$\\frac{a}{}$", prob=0.9,
                       target_prob=0.1, label="$$", steps=50, delta=0.0, baseline="zero")
    assert os.path.getsize(to_png([[expl]], str(tmp_path / "m.png"), title="$\\alpha$")) > 1000


def test_evaluate_and_bench_bad_arguments(tiny_checkpoints, tmp_path, capsys):
    import bench_ig
    import evaluate
    ckpt = tiny_checkpoints["cnn"]
    one_line(in_process(capsys, evaluate.main, "--checkpoint", ckpt, "--methods", ","), "--methods", status=2)
    one_line(in_process(capsys, evaluate.main, "--checkpoint", ckpt, "--steps", "99999"), "--steps", status=2)
    one_line(in_process(capsys, bench_ig.main, "--checkpoint", ckpt, "-n", "0"), "-n", status=2)
    one_line(in_process(capsys, bench_ig.main, "--checkpoint", ckpt, "--steps", "-1"), "--steps", status=2)
    one_line(in_process(capsys, bench_ig.main, "--checkpoint", str(tmp_path / "none")), "checkpoint not found", status=1)


def test_api_rejects_absurd_steps_and_batch_size(tiny_checkpoints):
    from tig.ig import MAX_STEPS, integrated_gradients
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    ids = ckpt.tokenizer.encode(["房间很好"], ckpt.maxlen)
    with pytest.raises(ValueError, match="steps must be between"):
        integrated_gradients(ckpt.model, ids, steps=MAX_STEPS + 1)
    with pytest.raises(ValueError, match="internal_batch_size"):
        integrated_gradients(ckpt.model, ids, internal_batch_size=-1)
