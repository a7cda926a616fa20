"""Faithfulness metrics on a hand-built model whose answer is known, and evaluate.py end to end."""
import json
import os
import re

import numpy as np

from tig import faithfulness
import pytest
import keras
from keras import layers

import evaluate
from tig.model import MaskedGlobalMaxPool, ZeroPadding, build_embedder, compose
from test_cli import assert_clean_failure, in_process, run

MARKER, VOCAB, DIM = 7, 20, 4


def marker_model():
    """p(class 1) = sigmoid(10 * [MARKER present] - 5): only the marker character matters."""
    embedder = build_embedder(VOCAB, DIM)
    table = np.random.default_rng(0).normal(size=(VOCAB, DIM)).astype("float32")
    table[:, 0] = 0.0
    table[MARKER, 0] = 1.0
    embedder.get_layer("embedding").set_weights([table])
    embeddings, mask = keras.Input((None, DIM)), keras.Input((None,), dtype="bool")
    pooled = MaskedGlobalMaxPool()(ZeroPadding()(embeddings, mask), mask)
    dense = layers.Dense(2, activation="softmax")
    probs = dense(pooled)
    weights = np.zeros((DIM, 2), "float32")
    weights[0] = [-5.0, 5.0]
    dense.set_weights([weights, np.array([2.5, -2.5], "float32")])
    return compose(embedder, keras.Model([embeddings, mask], probs, name="head"))


def marked_ids(n=6, length=12, seed=1):
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length + 4), np.int32)
    for i in range(n):
        row = rng.integers(3, VOCAB, size=length)
        row[row == MARKER] = 3
        row[rng.integers(length)] = MARKER
        ids[i, :length] = row
    return ids


def test_every_faithful_method_ranks_the_marker_first():
    model, ids = marker_model(), marked_ids()
    explained = evaluate.explain_all(model, ids, ["ig", "saliency", "gradxinput"], ["zero", "unk"], steps=32)
    for name, explained_by in explained.items():
        scores = explained_by["scores"]
        for row, s in zip(ids, scores):
            assert row[faithfulness.ranking(s, row != 0)[0]] == MARKER, name


def test_comprehensiveness_at_the_marker_is_the_full_drop():
    model, ids = marker_model(), marked_ids()
    predict = lambda x: np.asarray(model(x))
    probs = predict(ids)
    target = probs.argmax(-1)
    assert np.all(target == 1)
    scores = evaluate.explain_all(model, ids, ["ig"], ["zero"], steps=32)["ig[zero]"]["scores"]
    without = np.where(ids == MARKER, 0, ids)
    without = np.stack([np.concatenate([r[r != 0], np.zeros(np.sum(r == 0), np.int32)]) for r in without])
    full_drop = probs[:, 1] - predict(without)[:, 1]
    for removal in faithfulness.REMOVALS:
        r = faithfulness.faithfulness(predict, ids, scores, target, removal, ks=(1, 20))
        # 1% of 12 tokens rounds up to one token: the marker, so the whole drop
        assert r["comprehensiveness"][1] == pytest.approx(float(full_drop.mean()), abs=1e-6)
        assert r["sufficiency"][1] == pytest.approx(0.0, abs=1e-6)       # the marker alone suffices
        assert r["deletion_curve"][0] == pytest.approx(float(probs[:, 1].mean()), abs=1e-6)


def test_perturb_modes():
    row = np.array([5, 6, 7, 8, 0, 0], np.int32)
    assert faithfulness.perturb(row, [1, 2], "delete").tolist() == [5, 8, 0, 0, 0, 0]
    assert faithfulness.perturb(row, [1, 2], "delete", keep=True).tolist() == [6, 7, 0, 0, 0, 0]
    assert faithfulness.perturb(row, [1, 2], "pad").tolist() == [5, 0, 0, 8, 0, 0]
    assert faithfulness.perturb(row, [1, 2], "unk", keep=True).tolist() == [1, 6, 7, 1, 0, 0]
    assert faithfulness.top_count(12, 1) == 1 and faithfulness.top_count(12, 50) == 6 and faithfulness.top_count(3, 50) == 2


def test_random_baseline_is_reproducible_and_seeded():
    ids = marked_ids()
    a = evaluate.explain_all(None, ids, ["random"], [], seed=3)["random"]["scores"]
    b = evaluate.explain_all(None, ids, ["random"], [], seed=3)["random"]["scores"]
    c = evaluate.explain_all(None, ids, ["random"], [], seed=4)["random"]["scores"]
    assert np.array_equal(a, b) and not np.array_equal(a, c) and np.all(a[ids == 0] == 0)


def test_evaluate_cli_on_a_tiny_model(tiny_checkpoints, data_dir, tmp_path):
    result = run("evaluate.py", "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", data_dir, "-n", "12",
                 "--steps", "16", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| ig[zero] |" in result.stdout and "| random |" in result.stdout and "| ig[mask] |" in result.stdout
    results = json.loads((tmp_path / "faithfulness.json").read_text(encoding="utf-8"))
    assert results["n"] == 12 and len(results["methods"]["saliency"]["deletion_curve"]) == len(faithfulness.CURVE)
    assert os.path.getsize(tmp_path / "deletion_curve.png") > 5000
    ig, rnd = results["methods"]["ig[zero]"], results["methods"]["random"]
    assert ig["comprehensiveness_aopc"] > rnd["comprehensiveness_aopc"]
    # a pipe is not a terminal: plain progress lines, no colour or cursor codes in a log file
    for stream in (result.stdout, result.stderr):
        assert not re.search("[\x1b\r\b]", stream), repr(stream[:300])
    assert "explanations (100%)" in result.stderr


def test_default_output_folder_is_one_per_model(tmp_path):
    from types import SimpleNamespace
    first = SimpleNamespace(meta={}, directory=str(tmp_path / "checkpoints" / "hotel"))
    other = SimpleNamespace(meta={}, directory=str(tmp_path / "runs" / "hotel"))
    user = SimpleNamespace(meta={"source": str(tmp_path / "m.keras")}, directory=str(tmp_path))
    root = str(tmp_path / "results")
    path = evaluate.default_out_dir(first, root)
    assert path == os.path.join(root, "hotel") and evaluate.default_out_dir(user, root) == os.path.join(root, "m")
    os.makedirs(path)
    with open(os.path.join(path, "faithfulness.json"), "w") as f:
        json.dump({"model": evaluate.model_source(first)}, f)
    assert evaluate.default_out_dir(first, root) == path                         # its own results: updated
    assert evaluate.default_out_dir(other, root) == os.path.join(root, "hotel-2")   # never another model's


def test_evaluate_adaptive_steps(tiny_checkpoints, data_dir, tmp_path, capsys):
    # in this process; the test above runs the real command
    result = in_process(capsys, evaluate.main, "--checkpoint", tiny_checkpoints["mean"], "--data-dir", data_dir, "-n",
                        "8", "--steps", "auto", "--methods", "ig,random", "--baselines", "zero", "--removal", "pad",
                        "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    ig = json.loads((tmp_path / "faithfulness.json").read_text(encoding="utf-8"))["methods"]["ig[zero]"]
    assert ig["mean_steps"] >= 16 and ig["complete_share"] >= 0.75


def test_evaluate_cli_bad_input(tmp_path, capsys):
    for args, fragment in (
            (("--checkpoint", str(tmp_path / "missing")), "checkpoint not found"),
            (("--task", "hotel", "--methods", "limes"), "unknown method"),
            (("--task", "hotel", "--steps", "many"), "--steps: must be an integer from 1 to")):
        assert_clean_failure(in_process(capsys, evaluate.main, *args), fragment)


def test_top_token_agreement_ignores_padding():
    mask = np.array([[True, True, False], [True, True, True]])
    a = np.array([[0.1, 0.5, 0.0], [0.9, 0.1, 0.2]])
    b = np.array([[-1.0, 2.0, 9.0], [0.0, 0.1, 0.2]])   # 9.0 sits on padding and must not count
    assert faithfulness.top_token_agreement(a, b, mask) == 0.5
    assert faithfulness.top_token_agreement(a, a, mask) == 1.0


def test_a_whole_evaluation_traces_a_bounded_number_of_graphs(tiny_checkpoints, data_dir, tmp_path, capsys,
                                                                monkeypatch):
    """Explanations and the perturbation predictions share the static-shape graphs: per kind
    (outputs, gradient, path), one trace per bucket (XLA is off by default for a run this short),
    however many texts and perturbed copies are run."""
    from tig import cli
    from tig.embedding_split import split_at_embedding
    from tig.engine import ENGINE
    loaded, real_resolve = [], cli.resolve_explainable

    def resolve(*args, **kwargs):        # the checkpoint evaluate.py loads (a fresh model: no graphs yet)
        loaded.append(real_resolve(*args, **kwargs))
        return loaded[-1]
    monkeypatch.setattr(cli, "resolve_explainable", resolve)
    result = in_process(capsys, evaluate.main, "--checkpoint", tiny_checkpoints["cnn"], "--data-dir", data_dir,
                        "-n", "40", "--steps", "20", "--baselines", "zero,unk", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    new = ENGINE.traces_by_kind(split_at_embedding(loaded[0].model))
    per_kind = {}
    for kind, count in new.items():
        if count:
            per_kind[kind[0]] = per_kind.get(kind[0], 0) + count
    buckets = 2                                       # maxlen 24: buckets 16 and 24
    assert set(per_kind) == {"outputs", "gradient", "path"}, per_kind
    assert json.load(open(tmp_path / "faithfulness.json"))["graphs_traced"] == sum(per_kind.values())
    assert all(count <= buckets for count in per_kind.values()), per_kind
