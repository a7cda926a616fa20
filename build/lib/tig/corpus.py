"""Corpora for explain.py: texts read from any byte offset, so a shard is (start offset, count) and
any process (a Ray worker too) reads only its own shard; the shard plan and the input's sha256.

Input: .txt (one text per line), .csv (a text/review/title/content column, optional label column),
.jsonl ({"text": ..., optional "label": ...}), or a task's split. Blank texts are skipped and
counted; every text is cut to dataset.MAX_TEXT_CHARS characters as it is read.
"""
import functools
import hashlib
import itertools
import json
import os

from tig.errors import UserError

SPLITS = ("train", "val", "test")
TEXT_COLUMNS = ("text", "review", "title", "content", "sentence")


class FileSource:
    """Texts of a .txt, .csv or .jsonl file. records(offset) yields (offset, text, label) from a byte
    offset, so a shard is (start offset, count) and any process can read it by seeking."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise UserError(f"input file not found: {path}")
        self.format = os.path.splitext(path)[1].lower().lstrip(".")
        if self.format not in ("txt", "csv", "jsonl"):
            raise UserError(f"input {path}: expected a .txt, .csv or .jsonl file")
        self.columns = self._csv_columns() if self.format == "csv" else None

    def describe(self):
        return {"path": self.path}

    def _lines(self, f, at):
        """Decoded lines from byte offset at[0] (tig/readers.utf8_lines: the rules every script shares)."""
        from tig.readers import utf8_lines
        return utf8_lines(f, self.path, at)

    def _csv_columns(self):
        from tig.readers import csv_records
        at = [0]
        with open(self.path, "rb") as f:
            _, header = next(csv_records(self._lines(f, at), lambda line: f"{self.path} line {line}"), (None, None))
        if header is None:
            raise UserError(f"{self.path} is empty")
        header = [h.replace("\ufeff", "").strip().lower() for h in header]
        text_col = next((header.index(c) for c in TEXT_COLUMNS if c in header), None)
        if text_col is None:
            raise UserError(f"{self.path} line 1: expected a text column (one of {', '.join(TEXT_COLUMNS)}), "
                            f"got {header}")
        return text_col, header.index("label") if "label" in header else None, at[0]

    def records(self, offset=None):
        """(byte offset, text, label, characters cut at read) per non-blank record from `offset`."""
        from tig.dataset import cap_text_counted
        from tig.readers import csv_records
        with open(self.path, "rb") as f:
            if self.format == "csv":
                text_col, label_col, body = self.columns
                at = [body if offset is None else offset]
                start, need = at[0], max(text_col, label_col or 0) + 1
                starts = {}

                def lines():   # remembers the byte offset each line starts at, for the messages
                    for number, line in enumerate(self._lines(f, at), 1):
                        starts[number] = at[0] - len(line.encode("utf-8"))
                        yield line
                for number, row in csv_records(lines(), lambda n: f"{self.path} record at byte {starts.get(n, start)}"):
                    start = starts[number]
                    starts.clear()   # only the lines of the record being read are kept
                    if row and len(row) < need:
                        raise UserError(f"{self.path} record at byte {start}: expected {need} columns, "
                                        f"got {len(row)}")
                    text, cut = cap_text_counted(row[text_col]) if row else ("", 0)
                    if text:
                        yield start, text, (row[label_col].strip() if label_col is not None else None), cut
                return
            at = [offset or 0]
            start = at[0]
            for line in self._lines(f, at):
                if self.format == "txt":
                    (text, cut), label = cap_text_counted(line), None
                elif not line.strip():
                    text = ""
                else:
                    try:
                        obj = json.loads(line)
                        (text, cut), label = cap_text_counted(obj["text"]), obj.get("label")
                    except (ValueError, KeyError, TypeError, AttributeError):
                        raise UserError(f"{self.path} record at byte {start}: expected a JSON object with a "
                                        f'"text" string') from None
                if text:
                    yield start, text, label, cut
                start = at[0]


class TaskSource:
    """Texts of a task's split (dataset.load_task); the offset is the index in the split."""

    def __init__(self, task, split, data_dir):
        from tig.dataset import resolve_data_dir
        self.task, self.split, self.data_dir = task, split, os.path.abspath(resolve_data_dir(data_dir))

    def describe(self):
        return {"task": self.task, "split": self.split, "data_dir": self.data_dir}

    def records(self, offset=None):
        texts, labels, classes = load_split(self.task, self.split, self.data_dir)
        for i in range(offset or 0, len(texts)):
            yield i, texts[i], classes[labels[i]], 0   # the loaders cut texts at MAX_TEXT_CHARS already


@functools.cache
def load_split(task, split, data_dir):
    from tig.dataset import load_task
    data = load_task(task, data_dir)
    part = getattr(data, split)
    return part.texts, part.labels, data.classes


def plan_shards(source, shard_size, limit=None):
    """One pass over the input: (start offset, count) per shard, the text count and a sha256 of the texts."""
    digest, shards, n = hashlib.sha256(), [], 0
    for offset, text, label, _ in itertools.islice(source.records(), limit):
        if n % shard_size == 0:
            shards.append([offset, 0])
        shards[-1][1] += 1
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8") + b"\n")
        n += 1
    return [tuple(s) for s in shards], n, digest.hexdigest()


def read_shard(source, start, count):
    return [(text, label, cut) for _, text, label, cut in itertools.islice(source.records(start), count)]
