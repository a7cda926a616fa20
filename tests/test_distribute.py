"""train.py --distribute: MirroredStrategy on 2 logical CPU devices and a two-process
MultiWorkerMirroredStrategy run on 127.0.0.1; their checkpoints reload and predict on one device."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from tig.checkpoint import current_version

TIMEOUT = 300   # seconds per subprocess: a hung collective fails the test instead of blocking it


def tiny_args(data_dir, out, batch_size=16, epochs=8):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--task", "hotel", "--data-dir", data_dir, "--out", out,
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--maxlen", "24", "--min-freq", "1",
            "--verbose", "0", "--patience", "8"]


def env(**extra):
    return {**os.environ, **extra}


def reloaded_accuracy(out, data_dir):
    """Test accuracy of a checkpoint reloaded here, on this process's single CPU device."""
    from tig.dataset import load_task
    from tig.checkpoint import load_checkpoint
    ckpt = load_checkpoint(out)
    test = load_task("hotel", data_dir).test
    probs = ckpt.model.predict(ckpt.tokenizer.encode(test.texts, ckpt.maxlen), verbose=0)
    return float(np.mean(probs.argmax(-1) == test.labels))


def test_mirrored_on_two_cpu_devices_trains_like_one_device_and_reloads(tmp_path, data_dir, tiny_checkpoints):
    from tig.checkpoint import load_checkpoint
    # the single-device run: the session's tiny cnn, trained by conftest.train_tiny with tiny_args' settings
    single = load_checkpoint(tiny_checkpoints["cnn"]).metrics
    out = str(tmp_path / "mirrored")
    # per-replica batch 8 x 2 replicas = the single run's batch of 16: same steps per epoch
    run = subprocess.run(tiny_args(data_dir, out, batch_size=8) + ["--distribute", "mirrored"], cwd=ROOT,
                         env=env(TIG_CPU_DEVICES="2"), capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    with open(os.path.join(current_version(out), "metrics.json")) as f:
        metrics = json.load(f)
    assert (metrics["distribute"], metrics["replicas"], metrics["global_batch_size"]) == ("mirrored", 2, 16)
    assert "2 replicas on /job:localhost/replica:0/task:0/device:CPU:0, /job:localhost/replica:0/task:0/device:CPU:1" \
        in run.stderr, run.stderr[-500:]     # the devices it used
    assert single["replicas"] == 1
    assert metrics["test_accuracy"] >= 0.8 and abs(metrics["test_accuracy"] - single["test_accuracy"]) <= 0.15
    assert reloaded_accuracy(out, data_dir) == metrics["test_accuracy"]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_run_completes_and_only_the_chief_writes(tmp_path, data_dir):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = str(tmp_path / "runs" / "multiworker")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(tiny_args(data_dir, out, batch_size=8, epochs=3) + ["--distribute", "auto"],
                                      cwd=ROOT, env=env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for code, stdout, stderr in results:
        assert code == 0, stderr[-2000:]
    assert "saved" in results[0][1] and "not the chief" in results[1][1]
    assert os.listdir(tmp_path / "runs") == ["multiworker"]          # one checkpoint, no temp left over
    with open(os.path.join(current_version(out), "metrics.json")) as f:
        metrics = json.load(f)
    assert (metrics["distribute"], metrics["replicas"], metrics["global_batch_size"]) == ("multiworker", 2, 16)
    assert reloaded_accuracy(out, data_dir) == metrics["test_accuracy"]


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
    from tig.errors import UserError
    from tig.distribute import make_strategy
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TIG_CPU_DEVICES", raising=False)
    with pytest.raises(UserError, match=r"needs \$TF_CONFIG"):
        make_strategy("multiworker")
    assert make_strategy("auto")[1] == "none"
