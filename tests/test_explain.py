"""explain.py on real hotel reviews: one line per text, completeness per line, an independent
recomputation, resume after a real kill, the Ray engine, and the global summary on a hand-built model."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA, skip_or_fail

import explain
from tig.errors import UserError

N_TEXTS = 1000
SHARD = 100
STEPS = 8          # few steps keep the test fast; completeness is checked against the recorded delta


def read_out(out):
    lines = []
    shards = sorted(os.listdir(os.path.join(out, "shards")))
    for name in shards:
        with open(os.path.join(out, "shards", name), encoding="utf-8") as f:
            lines.extend(json.loads(line) for line in f)
    return shards, lines


@pytest.fixture(scope="module")
def hotel(tmp_path_factory):
    """A tiny char-CNN trained on 3,000 real hotel reviews, and a JSONL file of N_TEXTS other reviews."""
    if not os.path.exists(os.path.join(SHARED_DATA, "ChnSentiCorp_htl_all.csv")):
        skip_or_fail(f"no real data at {SHARED_DATA} (set $TIG_DATA_DIR)")
    import train
    from tig.dataset import load_task
    root = tmp_path_factory.mktemp("explain")
    ckpt = str(root / "ckpt")
    train.main(["--task", "hotel", "--data-dir", SHARED_DATA, "--out", ckpt, "--epochs", "2", "--limit", "3000",
                "--maxlen", "32", "--hidden", "16", "--embed-dim", "16", "--verbose", "0"])
    data = load_task("hotel", SHARED_DATA)
    texts, labels = data.train.texts[3000:3000 + N_TEXTS], data.train.labels[3000:3000 + N_TEXTS]
    path = root / "reviews.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (text, label) in enumerate(zip(texts, labels)):
            f.write(json.dumps({"text": text, "label": int(label)}, ensure_ascii=False) + "\n")
            if i % 97 == 0:
                f.write("\n")   # blank lines are not texts
    return {"ckpt": ckpt, "input": str(path), "texts": texts, "root": root}


def job_args(hotel, out, *extra):
    return ["--checkpoint", hotel["ckpt"], "--input", hotel["input"], "--out", out, "--steps", str(STEPS),
            "--shard-size", str(SHARD), "--min-count", "3", *extra]


@pytest.fixture(scope="module")
def full_run(hotel):
    out = str(hotel["root"] / "full")
    explain.main(job_args(hotel, out))
    return out


def test_one_line_per_text_in_input_order_and_completeness(hotel, full_run):
    shards, lines = read_out(full_run)
    assert len(lines) == N_TEXTS and len(shards) == N_TEXTS // SHARD
    assert [line["id"] for line in lines] == list(range(N_TEXTS))
    assert [line["text"] for line in lines] == hotel["texts"]
    for line in lines:
        assert len(line["scores"]) == len(line["tokens"]) and line["steps"] == STEPS
        gap = line["output"] - line["baseline_output"]
        assert abs(sum(line["scores"]) + line["delta"] - gap) < 1e-5
        assert abs(sum(line["word_scores"]) - sum(line["scores"])) < 1e-5
        assert abs(sum(line["probs"]) - 1) < 1e-5 and line["target"] == line["predicted"]


def test_lines_match_integrated_gradients_called_directly(hotel, full_run):
    from tig.ig import integrated_gradients
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(hotel["ckpt"])
    _, lines = read_out(full_run)
    picked = [lines[i] for i in (0, 1, 399, 777, N_TEXTS - 1)]
    ids = ckpt.tokenizer.encode([line["text"] for line in picked], ckpt.maxlen)
    a = integrated_gradients(ckpt.model, ids, steps=STEPS)
    for row, line in enumerate(picked):
        np.testing.assert_allclose(line["scores"], a.scores[row, :len(line["tokens"])], atol=1e-6)
        assert line["predicted"] == ckpt.classes[int(a.probs[row].argmax())]


def test_killed_run_resumes_to_the_same_output(hotel, full_run):
    out = str(hotel["root"] / "killed")
    command = [sys.executable, os.path.join(ROOT, "explain.py"), *job_args(hotel, out)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(explain.shard_path(out, 2)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    shards, _ = read_out(out)
    done = [s for s in shards if s.endswith(".jsonl")]
    assert 3 <= len(done) < N_TEXTS // SHARD
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr
    resumed_shards, resumed = read_out(out)
    full_shards, full = read_out(full_run)
    assert resumed_shards == full_shards     # no temp file left behind
    assert [(x["id"], x["text"], x["tokens"]) for x in resumed] == [(x["id"], x["text"], x["tokens"]) for x in full]
    np.testing.assert_allclose(np.concatenate([x["scores"] for x in resumed]),
                               np.concatenate([x["scores"] for x in full]), atol=1e-6)


def test_refuses_an_out_with_foreign_files_or_another_job(hotel, full_run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="did not create"):
        explain.main(job_args(hotel, str(foreign)))
    assert os.listdir(foreign) == ["notes.txt"]
    with pytest.raises(UserError, match="different job"):
        explain.main(job_args(hotel, full_run, "--method", "grad"))


def test_ray_engine_writes_the_same_attributions(hotel, full_run):
    ray = pytest.importorskip("ray")
    out = str(hotel["root"] / "ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)   # workers import the installed tig
    try:
        explain.main(job_args(hotel, out, "--engine", "ray", "-n", str(2 * SHARD)))
    finally:
        ray.shutdown()
    _, ray_lines = read_out(out)
    _, local = read_out(full_run)
    local = local[:2 * SHARD]
    assert [(x["id"], x["text"], x["predicted"]) for x in ray_lines] == [(x["id"], x["text"], x["predicted"])
                                                                         for x in local]
    for a, b in zip(ray_lines, local):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
        assert abs(a["delta"] - b["delta"]) < 1e-5


def marker_checkpoint(directory, marker, alphabet):
    """A 'mean' model whose only route to class 1 is the marker's embedding dimension 0; every other
    character has a small random embedding in the other dimensions."""
    from tig.model import build_model
    from tig.checkpoint import save_checkpoint
    from tig.tokenizer import RESERVED, Tokenizer
    tokenizer = Tokenizer(RESERVED + [marker] + alphabet)
    dim = 4
    model = build_model("mean", len(tokenizer), 2, embed_dim=dim, dropout=0.0, hidden=dim)
    rng = np.random.default_rng(0)
    table = np.zeros((len(tokenizer), dim), np.float32)
    table[len(RESERVED) + 1:, 1:] = rng.normal(0, 0.3, (len(alphabet), dim - 1))
    table[tokenizer.index[marker], 0] = 1.0
    model.get_layer("embedder").get_layer("embedding").set_weights([table])
    head = model.get_layer("head")
    hidden_w = np.eye(dim, dtype=np.float32)
    hidden_w[1:, 1:] += rng.normal(0, 0.2, (dim - 1, dim - 1))
    head.get_layer("hidden").set_weights([hidden_w, np.zeros(dim, np.float32)])
    out_w = rng.normal(0, 0.2, (dim, 2)).astype(np.float32)
    out_w[0] = [-20.0, 20.0]
    head.get_layer("probs").set_weights([out_w, np.zeros(2, np.float32)])
    save_checkpoint(directory, model, tokenizer, {"task": "marker", "classes": ["plain", "marked"], "maxlen": 16})


def test_summary_ranks_a_planted_marker_first(tmp_path):
    marker, alphabet = "鑫", list("的一是在不了有和人这中大为上个国我以要他")
    rng = np.random.default_rng(1)
    texts = []
    for i in range(300):
        chars = list(rng.choice(alphabet, size=10))
        if i % 3 == 0:
            chars[rng.integers(10)] = marker
        texts.append("".join(chars))
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    marker_checkpoint(str(tmp_path / "ckpt"), marker, alphabet)
    out = str(tmp_path / "out")
    explain.main(["--checkpoint", str(tmp_path / "ckpt"), "--input", str(tmp_path / "texts.txt"), "--out", out,
                  "--steps", "32", "--shard-size", "64", "--min-count", "5"])
    import csv
    with open(os.path.join(out, "summary.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for ranking in ("mean", "total"):
        first = [r for r in rows if (r["class"], r["level"], r["ranking"], r["rank"]) == ("marked", "char", ranking, "1")]
        assert first and first[0]["unit"] == marker and int(first[0]["count"]) == 100
    assert os.path.getsize(os.path.join(out, "summary.png")) > 10000
    with open(os.path.join(out, "summary.html"), encoding="utf-8") as f:
        page = f.read()
    assert 'id="global-summary"' in page and marker in page
