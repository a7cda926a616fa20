"""Checkpoints: a versioned, locked folder per trained model, its typed metadata, and --init-from.

    ckpt = load_checkpoint("checkpoints/hotel")     # ckpt.model, .tokenizer, .classes, .maxlen, .meta
    save_checkpoint(directory, model, tokenizer, meta, metrics)

A checkpoint folder holds versions and a pointer to the current one (see "storage" below); the
model file holds weights and architecture only (no optimizer state). `Meta` is what meta.json
must hold, checked on every load and save: a checkpoint whose tokenizer is not the one its model
was trained with, or whose classes do not match the model's outputs, is refused.
`init_from_checkpoint` copies another checkpoint's weights into a new model where shapes allow
(train.py --init-from).
"""
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import keras

from tig.errors import UserError, has_control
from tig.files import atomic_write, process_alive
from tig.model import HashedNgramEmbedding
from tig.tokenizer import Tokenizer

MODEL_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE = "model.keras", "tokenizer.json", "meta.json", "metrics.json"


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, or whose parts do not belong together."""


# --- metadata -------------------------------------------------------------------------

SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Meta(Mapping):
    """meta.json, typed. task, classes and maxlen are required; other keys train.py records
    (epochs, data_dir, ...) are kept in `extra` and written back unchanged. Read-only, it also
    works as the JSON object it is written as (meta["task"], meta.get("layer"), {**meta, ...})."""
    task: str
    classes: list
    maxlen: int
    arch: str = None
    level: str = None
    mask_rate: float = None
    tokenizer_sha256: str = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, meta, where):
        """Check a meta.json object field by field; a CheckpointError names the first bad one."""
        if isinstance(meta, Meta):
            meta = meta.to_dict()
        if not isinstance(meta, dict):
            raise CheckpointError(f"{where}: {META_FILE} must hold a JSON object")
        for name in ("task", "classes", "maxlen"):
            if name not in meta:
                raise CheckpointError(f"{where}: {META_FILE} has no field {name!r}")

        def bad(name, what):
            return CheckpointError(f"{where}: {META_FILE} field {name!r} must be {what}, got {meta[name]!r:.60}")
        task, classes, maxlen = meta["task"], meta["classes"], meta["maxlen"]
        if not isinstance(task, str) or not task:
            raise bad("task", "a non-empty string")
        if (not isinstance(classes, list) or len(classes) < 2
                or not all(isinstance(c, str) and c and not has_control(c) for c in classes)
                or len(set(classes)) != len(classes)):
            raise bad("classes", "a list of at least 2 distinct non-empty strings without control characters")
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
            raise bad("maxlen", "an integer >= 1")
        if meta.get("arch") is not None and not isinstance(meta["arch"], str):
            raise bad("arch", "a string")
        if meta.get("level") is not None and meta["level"] not in ("char", "word"):
            raise bad("level", "'char' or 'word'")
        rate = meta.get("mask_rate")
        if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1):
            raise bad("mask_rate", "a number in [0, 1)")
        digest = meta.get("tokenizer_sha256")
        if digest is not None and not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            raise bad("tokenizer_sha256", "a sha256 hex digest")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in meta.items() if k in known},
                   extra={k: v for k, v in meta.items() if k not in known})

    def to_dict(self):
        """The JSON object of meta.json (fields left None are not written)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    def __getitem__(self, name):
        return self.to_dict()[name]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self):
        return len(self.to_dict())


validate_meta = Meta.from_dict    # meta (a dict or a Meta) -> a checked Meta; CheckpointError otherwise


# --- storage ------------------------------------------------------------------------
#
# A checkpoint folder holds versions and a pointer to the current one:
#
#     <dir>/CURRENT              the name of the current version (replaced atomically)
#     <dir>/v-<time>-<pid>/      model.keras, tokenizer.json, meta.json, metrics.json
#
# Saving writes a new version under a temporary name, renames it, then replaces CURRENT, under a
# lock: CURRENT always names a complete version (a crash leaves the previous one loadable), two
# concurrent writers end with one complete checkpoint, and the next save removes stale versions
# and dead processes' temporary folders. The older flat layout (files directly in <dir>) loads.

POINTER_FILE, LOCK_FILE = "CURRENT", ".lock"
CHECKPOINT_FILES = (MODEL_FILE, TOKENIZER_FILE, META_FILE, METRICS_FILE)
VERSION_NAME = re.compile(r"v-[0-9]+-[0-9]+")
TEMP_NAME = re.compile(r"\.tmp-([0-9]+)-[0-9a-z_]+")
POINTER_TEMP = re.compile(r"\.?" + re.escape(POINTER_FILE) + r"\.tmp-.+")   # atomic_write's temp name for CURRENT


@dataclass
class Checkpoint:
    model: keras.Model
    tokenizer: Tokenizer
    classes: list
    maxlen: int
    meta: Meta
    directory: str = ""     # the folder the user named
    files: str = ""         # the folder holding this version's files

    @property
    def metrics(self):
        path = os.path.join(self.files or self.directory, METRICS_FILE)
        if not os.path.exists(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def checkpoint_meta(path):
    """The meta of the checkpoint of this project in folder `path`, or None when it is not verifiably
    one. File names prove nothing (a LevelDB folder has a CURRENT file too): CURRENT must name a
    version folder whose meta.json is a valid meta of this project; a flat checkpoint must hold the
    three files with such a meta.json."""
    pointer = os.path.join(path, POINTER_FILE)
    try:
        if os.path.isfile(pointer):
            with open(pointer, "rb") as f:
                name = f.read(200).decode("utf-8").strip()
            if not VERSION_NAME.fullmatch(name) or not os.path.isdir(os.path.join(path, name)):
                return None
            files = os.path.join(path, name)
        else:
            files = path
        if not all(os.path.isfile(os.path.join(files, n)) for n in (MODEL_FILE, TOKENIZER_FILE, META_FILE)):
            return None
        with open(os.path.join(files, META_FILE), encoding="utf-8") as f:
            meta = json.loads(f.read(1 << 20))
        return validate_meta(meta, path)
    except (OSError, ValueError, CheckpointError):
        return None


def enclosing_checkpoint(path):
    """The checkpoint folder `path` lies inside (a version folder, or deeper), or None."""
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if os.path.isfile(os.path.join(parent, POINTER_FILE)) or checkpoint_meta(parent) is not None:
            return parent
        parent = os.path.dirname(parent)
    return None


def _only_our_leftovers(path):
    """True when every entry is something save_checkpoint makes (an interrupted first save)."""
    return all(name == LOCK_FILE or VERSION_NAME.fullmatch(name) or TEMP_NAME.fullmatch(name)
               or POINTER_TEMP.fullmatch(name) for name in os.listdir(path))


def check_checkpoint_target(directory, task=None, arch=None, replace_different=False):
    """Refuse, before any training, an --out that is not a new path, an empty folder, or a
    checkpoint of this project; one inside a checkpoint; one that cannot be written; and a
    checkpoint of another task or architecture (given task/arch) unless replace_different."""
    if not directory or not str(directory).strip():
        raise CheckpointError("--out must not be empty")
    directory = os.path.abspath(directory)
    inside = enclosing_checkpoint(directory)
    if inside is not None:
        raise CheckpointError(f"refusing to write a checkpoint to {directory}: it is inside the checkpoint "
                              f"{inside} (nothing was touched); give a folder outside it")
    if os.path.exists(directory):
        if not os.path.isdir(directory):
            raise CheckpointError(f"refusing to write a checkpoint to {directory}: it is an existing file")
        meta = checkpoint_meta(directory)
        if os.listdir(directory) and meta is None and not _only_our_leftovers(directory):
            raise CheckpointError(f"refusing to write a checkpoint into {directory}: the folder is not empty and "
                                  "is not a checkpoint of this project (nothing in it was touched); give a new "
                                  "or empty folder")
        different = [f"{what} {meta.get(what)!r}, not {want!r}" for what, want in (("task", task), ("arch", arch))
                     if meta is not None and want is not None and meta.get(what) != want]
        if different and not replace_different:
            raise CheckpointError(f"refusing to replace the checkpoint {directory}: it was trained for "
                                  f"{' and '.join(different)} (nothing was touched); give another --out, or "
                                  "--replace-different to replace it")
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write a checkpoint to {directory}: {existing} is not a writable folder")
    return directory


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def save_checkpoint(directory, model, tokenizer, meta, metrics=None, replace_different=False):
    """Write a new version of the checkpoint in `directory` and make it current, atomically.

    The folder must be new, empty, or a checkpoint of this project (see check_checkpoint_target) of
    the same task and architecture as meta's, unless replace_different.
    meta gets the tokenizer's fingerprint, which load_checkpoint verifies.
    """
    meta = meta.to_dict() if isinstance(meta, Meta) else meta
    directory = check_checkpoint_target(directory, meta.get("task") if isinstance(meta, dict) else None,
                                        meta.get("arch") if isinstance(meta, dict) else None, replace_different)
    os.makedirs(directory, exist_ok=True)
    meta = validate_meta({**meta, "tokenizer_sha256": tokenizer.fingerprint()}, directory).to_dict()
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)   # permissions follow the umask (unlike mkdtemp's 0700)
    try:
        save_model_weights_only(model, os.path.join(tmp, MODEL_FILE))
        tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
        _write_json(os.path.join(tmp, META_FILE), meta)
        if metrics is not None:
            _write_json(os.path.join(tmp, METRICS_FILE), metrics)
        with open(os.path.join(directory, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # one commit at a time; released when the file closes
            version = f"v-{time.time_ns()}-{os.getpid()}"
            os.rename(tmp, os.path.join(directory, version))
            atomic_write(os.path.join(directory, POINTER_FILE), version + "\n")
            _remove_stale(directory, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_model_weights_only(model, path):
    """Save the model's architecture and weights, without the optimizer state (Adam's two slots per
    weight tripled the fasttext file to 1.2 GB). Keras 3 ignores include_optimizer for .keras files,
    so an uncompiled copy is saved (the model is not touched); older files with an optimizer still
    load (compile=False)."""
    bare = model.__class__.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    bare.save(path)
    return path


def _remove_stale(directory, current):
    """Delete what earlier saves left: other versions, temp folders of dead processes, and the
    files of the older flat layout. Only names that save_checkpoint itself makes are touched."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        temp = TEMP_NAME.fullmatch(name)
        if ((VERSION_NAME.fullmatch(name) and name != current) or (temp and not process_alive(int(temp.group(1))))
                or POINTER_TEMP.fullmatch(name)):   # under the lock, no live writer owns a pointer temp
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        elif name in CHECKPOINT_FILES and os.path.isfile(path):
            os.remove(path)


def current_version(directory):
    """The folder holding the current files of a checkpoint (versioned or flat layout)."""
    pointer = os.path.join(directory, POINTER_FILE)
    if not os.path.exists(pointer):
        return directory
    for _ in range(3):   # a concurrent save may replace the version between our two reads
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        if not VERSION_NAME.fullmatch(name):
            raise CheckpointError(f"checkpoint {directory}: {POINTER_FILE} does not name a version ({name[:40]!r})")
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            return path
    raise CheckpointError(f"checkpoint {directory}: {POINTER_FILE} names {name}, which does not exist")


def checkpoint_time(directory):
    """When the checkpoint in `directory` was last saved (None if it is not one)."""
    for name in (POINTER_FILE, META_FILE):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return os.path.getmtime(path)
    return None


def load_checkpoint(directory):
    """Reload a checkpoint written by train.py, checking that its parts belong together."""
    from tig.validate import check_path
    check_path(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint not found: {directory} (train one with: python train.py --task ...)")
    files = current_version(directory)
    paths = {name: os.path.join(files, name) for name in (MODEL_FILE, TOKENIZER_FILE, META_FILE)}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
    try:
        with open(paths[META_FILE], encoding="utf-8") as f:
            meta = json.load(f)
        tokenizer = Tokenizer.load(paths[TOKENIZER_FILE])
    except (ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {directory}: {e}") from None
    meta = validate_meta(meta, f"checkpoint {directory}")
    if meta.tokenizer_sha256 is None:
        raise CheckpointError(f"checkpoint {directory}: {META_FILE} has no tokenizer_sha256, so {TOKENIZER_FILE} "
                              "cannot be checked against the model; retrain it with train.py")
    if meta.tokenizer_sha256 != tokenizer.fingerprint():
        raise CheckpointError(f"checkpoint {directory}: {TOKENIZER_FILE} is not the vocabulary the model was trained "
                              f"with (its fingerprint differs from the one in {META_FILE})")
    try:
        model = keras.saving.load_model(paths[MODEL_FILE], compile=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {directory}: cannot load {MODEL_FILE} ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    vocab_size = model.get_layer("embedder").get_layer("embedding").input_dim
    if vocab_size != len(tokenizer):
        raise CheckpointError(f"checkpoint {directory}: tokenizer has {len(tokenizer)} tokens but the model's "
                              f"embedding has {vocab_size} rows; they do not belong together")
    classes = meta.classes
    if model.output_shape[-1] != len(classes):
        raise CheckpointError(f"checkpoint {directory}: meta.json lists {len(classes)} classes but the model "
                              f"outputs {model.output_shape[-1]}")
    return Checkpoint(model, tokenizer, classes, meta.maxlen, meta, directory, files)



# --- transfer -----------------------------------------------------------------------

def init_from_checkpoint(model, tokenizer, directory, classes):
    """Start `model` (just built for `tokenizer` and `classes`) from checkpoint `directory`.

    Embedding rows are mapped token by token through the two vocabularies (tokens the source never
    saw keep their fresh rows); every other layer of the same name and weight shapes is copied,
    except the output layer when the classes differ (a new task gets a new one). Hashed n-gram rows
    are keyed by token ids: copied only when both vocabularies are identical. Refuses (CheckpointError)
    another architecture, token level or embedding size. Returns a summary; the source is not modified.
    """
    source = load_checkpoint(directory)
    src_embedder, dst_embedder = source.model.get_layer("embedder"), model.get_layer("embedder")
    src_table, dst_table = src_embedder.get_layer("embedding"), dst_embedder.get_layer("embedding")
    src_arch = source.meta.get("arch")
    dst_arch = "fasttext" if any(isinstance(l, HashedNgramEmbedding) for l in dst_embedder.layers) else None
    problems = []
    if source.tokenizer.level != tokenizer.level:
        problems.append(f"{source.tokenizer.level} tokens, not {tokenizer.level}")
    if src_table.output_dim != dst_table.output_dim:
        problems.append(f"embedding size {src_table.output_dim}, not {dst_table.output_dim}")
    src_heads = {l.name: l for l in source.model.get_layer("head").layers if l.weights}
    dst_heads = {l.name: l for l in model.get_layer("head").layers if l.weights}
    if set(src_heads) != set(dst_heads) or (src_arch == "fasttext") != (dst_arch == "fasttext"):
        problems.append(f"architecture {src_arch!r} does not match the model being trained")
    if problems:
        raise CheckpointError(f"cannot initialise from {directory}: it has " + "; ".join(problems))

    weights, source_rows = dst_table.get_weights()[0].copy(), src_table.get_weights()[0]
    pairs = [(row, source.tokenizer.index[token]) for row, token in enumerate(tokenizer.vocab)
             if token in source.tokenizer.index]
    for row, src_row in pairs:
        weights[row] = source_rows[src_row]
    dst_table.set_weights([weights])
    mapped = len(pairs)
    copied, fresh = ["embedding"], []
    for layer in dst_embedder.layers:
        if isinstance(layer, HashedNgramEmbedding):
            if source.tokenizer.vocab == tokenizer.vocab:
                layer.set_weights(src_embedder.get_layer(layer.name).get_weights())
                copied.append(layer.name)
            else:
                fresh.append(layer.name)
    for name, layer in dst_heads.items():
        src_weights = src_heads[name].get_weights()
        same_shapes = [w.shape for w in src_weights] == [tuple(w.shape) for w in layer.weights]
        if same_shapes and (name != "probs" or list(source.classes) == list(classes)):
            layer.set_weights(src_weights)
            copied.append(name)
        else:
            fresh.append(name)
    return {"checkpoint": source.directory, "embedding_rows_mapped": mapped, "vocabulary": len(tokenizer),
            "copied": copied, "fresh": fresh}
