"""The second hostile round (issue 19): nothing lost, nothing silently wrong, nothing injected.

Each test is one probe of the round; it fails on the code before the fix. The checkpoints here are
untrained (built and saved, never fitted), so the whole file costs seconds.
"""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import write_csv
from test_cli import in_process
from test_safety import snapshot


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """An untrained hotel-format cnn checkpoint (tiny sizes), saved by model.save_checkpoint."""
    from tig.model import build_model
    from tig.checkpoint import save_checkpoint
    from tig.tokenizer import RESERVED, Tokenizer
    tokenizer = Tokenizer(RESERVED + list("房间很干净服务好差早餐太了"), "char")
    model = build_model("cnn", len(tokenizer), 2, embed_dim=8, hidden=8)
    out = str(tmp_path_factory.mktemp("small") / "hotel")
    save_checkpoint(out, model, tokenizer, {"task": "hotel", "classes": ["negative", "positive"], "maxlen": 16,
                                            "arch": "cnn", "level": "char"})
    return out


def train_probe(capsys, *args):
    import train
    return in_process(capsys, train.main, "--task", "hotel", "--epochs", "1", "--maxlen", "16", "--min-freq", "1",
                      "--verbose", "0", *args)


# --- 1. data lost: "ours" is verified, never taken from file names ------------------------------------------

def test_a_leveldb_folder_with_a_current_file_is_not_a_checkpoint(data_dir, tmp_path, capsys):
    db = tmp_path / "db"
    db.mkdir()
    (db / "CURRENT").write_text("MANIFEST-000001\n")
    (db / "MANIFEST-000001").write_bytes(b"\x00\x01leveldb")
    (db / "000003.log").write_bytes(b"data")
    before = snapshot(db)
    train_probe(capsys, "--data-dir", data_dir, "--out", str(db)).expect("not a checkpoint of this project", 1)
    assert snapshot(db) == before


def test_files_merely_named_like_a_flat_checkpoint_are_not_one(data_dir, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in (("model.keras", "my zip"), ("tokenizer.json", '["a list"]'), ("meta.json", '{"x": 1}')):
        (folder / name).write_text(text)
    before = snapshot(folder)
    train_probe(capsys, "--data-dir", data_dir, "--out", str(folder)).expect("not a checkpoint of this project", 1)
    assert snapshot(folder) == before


def test_out_inside_a_checkpoints_version_folder_is_refused(small_checkpoint, data_dir, tmp_path, capsys):
    from tig.checkpoint import current_version, load_checkpoint
    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    before = snapshot(ckpt)
    for inside in (current_version(str(ckpt)), os.path.join(current_version(str(ckpt)), "deeper")):
        train_probe(capsys, "--data-dir", data_dir, "--out", inside).expect("inside the checkpoint", 1)
    assert snapshot(ckpt) == before
    load_checkpoint(str(ckpt))


def test_replacing_a_checkpoint_of_another_task_or_arch_needs_a_flag(small_checkpoint, data_dir, tmp_path, capsys):
    from tig.checkpoint import load_checkpoint, save_checkpoint
    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    before = snapshot(ckpt)
    train_probe(capsys, "--task", "weibo", "--data-dir", data_dir, "--out", str(ckpt)).expect(
        "trained for task 'hotel', not 'weibo'", 1)
    train_probe(capsys, "--data-dir", data_dir, "--out", str(ckpt), "--arch", "mean").expect(
        "--replace-different", 1)
    assert snapshot(ckpt) == before
    old = load_checkpoint(str(ckpt))
    with pytest.raises(Exception, match="not 'weibo'"):
        save_checkpoint(str(ckpt), old.model, old.tokenizer, {**old.meta, "task": "weibo"})
    save_checkpoint(str(ckpt), old.model, old.tokenizer, {**old.meta, "task": "weibo"}, replace_different=True)
    assert load_checkpoint(str(ckpt)).meta["task"] == "weibo"
    save_checkpoint(str(ckpt), old.model, old.tokenizer, {**old.meta, "task": "weibo"})   # same task: no flag


# --- 2. injection: one sanitiser for every string that reaches a terminal or a report ---------------------

HOSTILE = "\x1b]0;owned\x07\u202eevil\u2066\nerror: fake"
RAW = ("\x1b", "\x07", "\u202e", "\u2066")


def assert_clean(text):
    assert not any(ch in text for ch in RAW), repr(text)


def test_class_names_with_control_characters_are_refused_at_load(data_dir, tmp_path):
    from tig.dataset import DataError, load_task
    folder = tmp_path / "thucnews"
    shutil.copytree(os.path.join(data_dir, "thucnews"), folder)
    (folder / "class.txt").write_text("finance\nsports\x1b]0;owned\x07\ngame\n", encoding="utf-8")
    with pytest.raises(DataError, match="control or bidirectional") as error:
        load_task("thucnews", str(tmp_path))
    assert_clean(str(error.value).replace("\\x1b", ""))
    (folder / "class.txt").write_text("finance\nsports\u202e\ngame\n", encoding="utf-8")
    with pytest.raises(DataError, match="control or bidirectional"):
        load_task("thucnews", str(tmp_path))


def test_a_meta_with_control_characters_in_class_names_is_refused(small_checkpoint, tmp_path):
    from tig.checkpoint import CheckpointError, current_version, load_checkpoint
    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    meta_path = os.path.join(current_version(str(ckpt)), "meta.json")
    meta = json.load(open(meta_path, encoding="utf-8"))
    json.dump({**meta, "classes": ["negative", "posi\u202etive"]}, open(meta_path, "w", encoding="utf-8"))
    with pytest.raises(CheckpointError, match="without control characters"):
        load_checkpoint(str(ckpt))


def test_os_errors_and_user_errors_stay_one_clean_line(capsys):
    def os_error():
        raise FileNotFoundError(2, "No such file or directory", f"out/{HOSTILE}")

    def user_error():
        from tig.errors import UserError
        raise UserError(f"bad {HOSTILE}")

    for main in (os_error, user_error):
        result = in_process(capsys, main)
        assert result.returncode == 1
        assert_clean(result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_library_warnings_are_sanitised(capsys):
    import warnings

    def warn():
        warnings.warn(f"Glyph 27 ({HOSTILE}) missing from font(s) DejaVu Sans.", UserWarning)

    result = in_process(capsys, warn)
    assert "Glyph 27" in result.stderr
    assert_clean(result.stderr)


def test_reports_and_terminal_views_carry_no_bidi_or_control_characters():
    from tig.render import Explanation, to_markdown, to_report_html, to_terminal
    expl = Explanation(text="好\u202e坏", units=list("好\u202e坏"), scores=np.array([0.1, 0.2, -0.3]),
                       unknown=[False] * 3, method="ig", target="posi\u202etive", predicted="posi\u202etive",
                       prob=0.9, target_prob=0.9, label="neg\x1bative", steps=8, delta=0.0, baseline="zero")
    for text in (to_terminal([[expl]], False), to_terminal([[expl]], True).replace("\x1b[", ""),
                 to_markdown([[expl]]), to_report_html([[expl]], f"title {HOSTILE}")):
        assert_clean(text)


def test_wrote_lines_print_paths_sanitised(small_checkpoint, tmp_path, capsys):
    import visualize
    out = str(tmp_path / "out\x1b]0;owned\x07\u202e")
    result = in_process(capsys, visualize.main, "--checkpoint", small_checkpoint, "--text", "房间很干净",
                        "--out", out, "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert_clean(result.stdout)


# --- 3. silently wrong: one reader per format, the same numbers, refusals instead of coercion -------------

def test_explain_refuses_an_unclosed_quote_like_the_loaders(tmp_path):
    from tig.errors import UserError
    from tig.corpus import FileSource, plan_shards
    path = tmp_path / "texts.csv"
    path.write_text('text,label\n好的,1\n"没有关上的引号,0\n第三行,1\n第四行,0\n', encoding="utf-8")
    with pytest.raises(UserError, match="unclosed quote"):
        plan_shards(FileSource(str(path)), 10)


def test_visualize_and_explain_split_lines_and_drop_a_bom_the_same_way(tmp_path):
    import argparse
    from tig.corpus import FileSource
    from visualize import read_texts
    body = "\ufeff第一行\u2028还是第一行\x0c也是\n第二行\r\n\n第三行\r还是第三行\n"
    for name in ("texts.txt", "texts.jsonl"):
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("\ufeff" + "\n".join(json.dumps({"text": t}, ensure_ascii=False)
                                                 for t in ["一", "二"]) + "\n", encoding="utf-8")
            assert [r[1] for r in FileSource(str(path)).records()] == ["一", "二"]
            continue
        path.write_text(body, encoding="utf-8")
        from_explain = [r[1] for r in FileSource(str(path)).records()]
        from_visualize = read_texts(argparse.Namespace(text=[], file=str(path)))
        assert from_visualize == from_explain
        assert len(from_explain) == 3


def test_a_huge_text_reports_the_same_truncation_everywhere(small_checkpoint, tmp_path):
    from tig.corpus import FileSource, read_shard
    from explain import Explainer
    from tig.checkpoint import load_checkpoint
    from tig.render import to_terminal
    from visualize import explain
    text = "房间很干净" * 200_000
    path = tmp_path / "huge.txt"
    path.write_text(text + "\n", encoding="utf-8")
    ckpt = load_checkpoint(small_checkpoint)
    line = Explainer(small_checkpoint, method="grad")(0, read_shard(FileSource(str(path)), 0, 1))[0]
    expl = explain(ckpt, [text], "gradxinput")[0]
    assert line["truncated"] == expl.truncated == len(text) - ckpt.maxlen
    view = to_terminal([[expl]], False)
    assert len(view) < 1000, len(view)


def test_a_meta_without_tokenizer_fingerprint_is_refused(small_checkpoint, tmp_path):
    from tig.checkpoint import CheckpointError, current_version, load_checkpoint
    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_checkpoint, ckpt)
    meta_path = os.path.join(current_version(str(ckpt)), "meta.json")
    meta = json.load(open(meta_path, encoding="utf-8"))
    del meta["tokenizer_sha256"]
    json.dump(meta, open(meta_path, "w", encoding="utf-8"))
    with pytest.raises(CheckpointError, match="no tokenizer_sha256"):
        load_checkpoint(str(ckpt))


def test_a_tokenizer_file_holding_a_list_is_a_clear_error(tmp_path):
    from tig.tokenizer import Tokenizer
    path = tmp_path / "tokenizer.json"
    path.write_text('["<pad>", "<unk>", "<mask>"]', encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizer file.*JSON object"):
        Tokenizer.load(str(path))


def test_duplicates_across_splits_are_counted(data_dir):
    from tig.dataset import load_task
    data = load_task("hotel", data_dir)
    overlap = data.overlap()
    train = set(data.train.texts)
    assert overlap["test_texts_also_in_train"] == sum(t in train for t in data.test.texts)
    assert set(overlap) == {"val_texts_also_in_train", "test_texts_also_in_train"}


def test_tig_xla_must_be_0_1_or_unset():
    from tig.errors import UserError
    from tig.engine import xla_from_env
    assert (xla_from_env("0"), xla_from_env("1"), xla_from_env("")) == (False, True, None)
    with pytest.raises(UserError, match="TIG_XLA must be 0, 1 or unset"):
        xla_from_env("maybe")


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"steps": 2.7}, TypeError, "steps"), ({"steps": True}, TypeError, "steps"),
    ({"steps": float("nan")}, TypeError, "steps"), ({"steps": 0}, ValueError, "steps"),
    ({"steps": "many"}, ValueError, "steps"),
    ({"target": 1.7}, TypeError, "target"), ({"target": True}, TypeError, "target"),
    ({"target": 5}, ValueError, "target"),
    ({"tolerance": -1}, ValueError, "tolerance"), ({"tolerance": float("nan")}, ValueError, "tolerance"),
    ({"baseline": np.full(8, np.nan)}, ValueError, "baseline"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
])
def test_integrated_gradients_refuses_instead_of_coercing(small_checkpoint, kwargs, error, fragment):
    from tig.ig import integrated_gradients
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(small_checkpoint)
    ids = ckpt.tokenizer.encode(["房间很干净"], ckpt.maxlen)
    with pytest.raises(error, match=fragment):
        integrated_gradients(ckpt.model, ids, **{"steps": 4, **kwargs})


def test_token_ids_outside_the_vocabulary_and_none_are_refused(small_checkpoint):
    from tig.saliency import gradients
    from tig.ig import integrated_gradients
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(small_checkpoint)
    for bad in ([[4, -1, 0]], [[4, len(ckpt.tokenizer), 0]]):
        for fn in (integrated_gradients, gradients):
            with pytest.raises(ValueError, match="outside the vocabulary"):
                fn(ckpt.model, np.array(bad, np.int32))
    with pytest.raises(TypeError, match="model must be"):
        integrated_gradients(None, np.array([[4]]))
    with pytest.raises(TypeError, match="directory must be a path"):
        load_checkpoint(None)


def test_visualize_explain_refuses_bad_arguments(small_checkpoint):
    from tig.checkpoint import load_checkpoint
    from visualize import explain
    ckpt = load_checkpoint(small_checkpoint)
    with pytest.raises(TypeError, match=r"list of strings.*\[text\]"):
        explain(ckpt, "房间很干净")
    with pytest.raises(ValueError, match="level"):
        explain(ckpt, ["房间很干净"], level="bogus")
    with pytest.raises(ValueError, match="labels"):
        explain(ckpt, ["房间很干净"], "gradxinput", labels=[9])


# --- 4. tracebacks: every script under the one-line handler, from its first line --------------------------

def test_ctrl_c_while_tensorflow_imports_prints_one_line():
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    proc = subprocess.Popen([sys.executable, "explain.py", "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)   # inside `import tensorflow` (several seconds on this machine)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal (a fast machine)")
    assert "Traceback" not in err, err
    assert err.strip() == "interrupted", err


def test_bench_corpus_and_explain_flags_are_checked_in_one_line(capsys):
    import bench_corpus
    import explain
    for main, args, fragment in (
            (bench_corpus.main, ("thuctc", "--files", "nan"), "expected an integer"),
            (explain.main, ("--checkpoint", "x", "--input", "y", "--out", "z", "--num-gpus", "nan"), "finite number")):
        in_process(capsys, main, *args).expect(fragment, 2)


def test_keras_io_example_checks_its_output_folder_before_training(tmp_path, capsys):
    import keras_io_example
    (tmp_path / "a file").write_text("not a folder")   # a missing folder is created; this one cannot be
    in_process(capsys, keras_io_example.main, "--out", str(tmp_path / "a file" / "sub" / "m.keras")).expect(
        "not a writable folder", 1)


# --- 5. corpus jobs and limits ----------------------------------------------------------------------------

def explain_job(capsys, checkpoint, source, out, *extra):
    import explain
    return in_process(capsys, explain.main, "--checkpoint", checkpoint, "--input", str(source), "--out", str(out),
                      "--method", "grad", "--shard-size", "2", *extra)


@pytest.fixture()
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(["房间很干净", "服务太差了", "早餐很好", "干净", "房间差", "服务好"]) + "\n",
                    encoding="utf-8")
    return path


def test_resume_redoes_a_damaged_shard_and_names_it(small_checkpoint, texts_file, tmp_path, capsys):
    out = tmp_path / "job"
    assert explain_job(capsys, small_checkpoint, texts_file, out).returncode == 0
    whole = (out / "shards" / "part-00001.jsonl").read_text(encoding="utf-8")
    (out / "shards" / "part-00001.jsonl").write_text(whole.splitlines(keepends=True)[0], encoding="utf-8")
    (out / "shards" / "part-00002.jsonl").write_text('{"id": 4, "text": "半', encoding="utf-8")
    result = explain_job(capsys, small_checkpoint, texts_file, out)
    assert result.returncode == 0, result.stderr
    assert "part-00001.jsonl is damaged (1 lines for 2 texts)" in result.stderr
    assert "part-00002.jsonl is damaged" in result.stderr
    assert (out / "shards" / "part-00001.jsonl").read_text(encoding="utf-8") == whole
    assert len((out / "shards" / "part-00002.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_a_broken_manifest_is_named(small_checkpoint, texts_file, tmp_path, capsys):
    out = tmp_path / "job"
    assert explain_job(capsys, small_checkpoint, texts_file, out).returncode == 0
    (out / "explain.json").write_text('{"program": "expl', encoding="utf-8")
    explain_job(capsys, small_checkpoint, texts_file, out).expect("explain.json is damaged", 1)


def test_resume_keeps_the_temp_files_of_a_live_run(small_checkpoint, texts_file, tmp_path, capsys):
    import subprocess
    import sys
    out = tmp_path / "job"
    assert explain_job(capsys, small_checkpoint, texts_file, out).returncode == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live_temp = out / "shards" / f".part-00000.jsonl.tmp-{os.getppid()}-abc123"
    dead_temp = out / "shards" / f".part-00000.jsonl.tmp-{int(dead.stdout)}-abc123"
    live_temp.write_text("half", encoding="utf-8")
    dead_temp.write_text("half", encoding="utf-8")
    assert explain_job(capsys, small_checkpoint, texts_file, out).returncode == 0
    assert live_temp.exists() and not dead_temp.exists()


def test_shard_numbers_past_99999_are_ours(tmp_path):
    from explain import foreign_files
    (tmp_path / "shards").mkdir()
    (tmp_path / "explain.json").write_text("{}")
    (tmp_path / "shards" / "part-100000.jsonl").write_text("")
    assert foreign_files(str(tmp_path)) == []


def test_a_checkpoint_replaced_mid_job_is_refused_by_the_explainer(small_checkpoint):
    from tig.errors import UserError
    from explain import Explainer
    with pytest.raises(UserError, match="changed since this job started"):
        Explainer(small_checkpoint, method="grad", model_sha256="0" * 64)


def test_out_slash_is_refused_without_walking_the_file_system(small_checkpoint, texts_file, capsys):
    import time
    start = time.perf_counter()
    explain_job(capsys, small_checkpoint, texts_file, "/").expect("did not create", 1)
    assert time.perf_counter() - start < 10


def test_limits_on_devices_and_maxlen(monkeypatch, data_dir, capsys):
    from tig.errors import UserError
    from tig.distribute import cpu_devices_requested
    monkeypatch.setenv("TIG_CPU_DEVICES", "999")
    with pytest.raises(UserError, match="from 1 to 64"):
        cpu_devices_requested()
    monkeypatch.delenv("TIG_CPU_DEVICES")
    train_probe(capsys, "--data-dir", data_dir, "--maxlen", "10000000").expect("between 1 and 2048", 2)
