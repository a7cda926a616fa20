"""Checkpoint size per architecture at its documented settings: saved now (weights only) and as a
compiled model with its optimizer state (how checkpoints were saved before).

    python bench/checkpoint_sizes.py --data-dir DIR

The size depends on the parameter count, not on training, so each model gets one training step
(which creates the optimizer's slots) on THUCNews, whose vocabulary the documented settings use.
"""

import os

from tig.cli import quiet_tensorflow

from tig.training import ARCH_DEFAULTS

SETTINGS = {   # name -> (arch, build_model options), as the documented commands (RESULTS.md, train.py)
    "cnn, thucnews wide (256/256)": ("cnn", {"embed_dim": 256, "hidden": 256}),
    "cnn, 512 filters": ("cnn", {"embed_dim": 256, "hidden": 512}),
    "textcnn 3x256": ("textcnn", {"hidden": 256}),
    "bilstm": ("bilstm", {}),
    "mean": ("mean", {}),
    "fasttext (train.py's fasttext defaults)": ("fasttext", {k: ARCH_DEFAULTS["fasttext"][k]
                                                             for k in ("embed_dim", "hidden", "ngram_buckets")}),
    "transformer (64-d)": ("transformer", {"embed_dim": 64, "hidden": 64}),
}


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main(argv=None):
    from tig.cli import ArgumentParser
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("--out", default=os.path.join("runs", "checkpoint-sizes"), help="Folder for the checkpoints.")
    args = p.parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    import numpy as np

    from tig.checkpoint import current_version, save_checkpoint
    from tig.dataset import load_task
    from tig.model import build_model, make_optimizer
    from tig.tokenizer import Tokenizer
    data = load_task("thucnews", args.data_dir)
    tokenizer = Tokenizer.fit(data.train.texts, min_freq=2)
    ids, labels = tokenizer.encode(data.train.texts[:64], 32), np.asarray(data.train.labels[:64])
    print(f"THUCNews vocabulary: {len(tokenizer)} tokens")
    for name, (arch, options) in SETTINGS.items():
        model = build_model(arch, len(tokenizer), len(data.classes), **options)
        model.compile(optimizer=make_optimizer(arch, 1e-3), loss="sparse_categorical_crossentropy")
        model.train_on_batch(ids, labels)
        out = os.path.join(args.out, name.split()[0] + "-" + str(options.get("hidden", 128)))
        save_checkpoint(out, model, tokenizer, {"task": "thucnews", "classes": data.classes, "maxlen": 32,
                                                "arch": arch})
        with_optimizer = out + "-with-optimizer.keras"
        model.save(with_optimizer)
        print(f"{name}: {model.count_params():,} parameters, checkpoint {folder_bytes(current_version(out)) / 1e6:.1f} MB "
              f"(with the optimizer state: {os.path.getsize(with_optimizer) / 1e6:.1f} MB)", flush=True)
        os.remove(with_optimizer)


if __name__ == "__main__":
    from tig.cli import run
    run(main)
