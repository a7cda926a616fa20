"""explain.py's work, importable by any process (a Ray worker finds it because the package is installed):
an Explainer that loads a checkpoint once and turns records into output lines (one JSON object per text,
TextAttribution.to_json with the record's id and label), and the two Ray Data stages around it.
A shard's lines are written atomically (files.atomic_write): a shard on disk is always complete."""
import json
import os

import numpy as np

from tig.cli import quiet_tensorflow
from tig.corpus import read_shard
from tig.defaults import STEPS
from tig.errors import UserError
from tig.files import atomic_write, files_sha256

METHOD = "ig"
TEXTS_PER_CALL = 64        # texts per attribution call


def shard_path(out, k):
    return os.path.join(out, "shards", f"part-{k:05d}.jsonl")


def write_shard(out, k, lines):
    def write(f):
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return atomic_write(shard_path(out, k), write)


class Explainer:
    """Loads a checkpoint once; then turns lists of (text, label) into output lines (dicts).

    The same class runs in the local engine and, one instance per worker, in the Ray engine."""

    def __init__(self, checkpoint, method=METHOD, steps=STEPS, baseline=None, target=None, texts_per_call=TEXTS_PER_CALL,
                 model_sha256=None):
        quiet_tensorflow()
        from tig.checkpoint import load_checkpoint
        self.ckpt = load_checkpoint(checkpoint)
        if model_sha256 is not None:   # a checkpoint replaced mid-job would mix two models in one output
            from tig.checkpoint import MODEL_FILE
            found = files_sha256(os.path.join(self.ckpt.files, MODEL_FILE))
            if found != model_sha256:
                raise UserError(f"checkpoint {checkpoint} changed since this job started (its model.keras sha256 "
                                f"is {found[:12]}..., the job's {model_sha256[:12]}...); explain into a new --out")
        self.method, self.steps, self.texts_per_call = method, steps, texts_per_call
        self.baseline, self.target = baseline, target   # None: integrated gradients' default (zero)
        self.attribution_seconds = 0.0   # time inside the attribution calls: the floor of the loop

    def __call__(self, first_id, records):
        """(text, label, characters cut at read) records -> output lines (methods.explain_texts)."""
        from tig.methods import explain_texts
        ckpt, timer = self.ckpt, []
        explained = explain_texts(ckpt, [text for text, *_ in records], self.method, target=self.target,
                                  steps=self.steps, baseline=self.baseline, texts_per_call=self.texts_per_call,
                                  timer=timer)
        self.attribution_seconds += sum(timer)
        lines = []
        for row, ((text, label, *cut), r) in enumerate(zip(records, explained)):
            line = {"id": first_id + row, "label": label,
                    **r.to_json(ckpt.classes, word_level=ckpt.tokenizer.level == "word")}
            line["text"], line["truncated"] = text, (cut[0] if cut else 0) + r.truncated
            lines.append(line)
        return lines


def explainer_args(job):
    return dict(checkpoint=job["checkpoint"], method=job["method"], steps=job["steps"], baseline=job["baseline"],
                target=job["target"], texts_per_call=job.get("texts_per_call", job.get("batch_size")),
                model_sha256=job["model_sha256"])


class ShardReader:
    """Ray stage 1 (read): shard descriptors -> the shard's records, read by the worker itself."""

    def __init__(self, source):
        self.source = source

    def __call__(self, batch):
        records = [json.dumps(read_shard(self.source, int(s), int(c)), ensure_ascii=False)
                   for s, c in zip(batch["start"], batch["count"])]
        return {"shard": batch["shard"], "records": np.array(records, dtype=object)}


class ShardExplainer:
    """Ray stage 2 (explain + write): one per worker, loads the checkpoint once, commits whole shards."""

    def __init__(self, job, out):
        self.explainer, self.job, self.out = Explainer(**explainer_args(job)), job, out

    def __call__(self, batch):
        counts = []
        for k, records in zip(batch["shard"], batch["records"]):
            records = [tuple(r) for r in json.loads(records)]
            write_shard(self.out, int(k), self.explainer(int(k) * self.job["shard_size"], records))
            counts.append(len(records))
        return {"shard": batch["shard"], "texts": np.array(counts)}
