"""Captum and this project's integrated gradients side by side on the same BERT, in one run.

    pip install torch==2.13.0 captum transformers     # optional: only this script needs them
    python bench/compare_captum.py --data-dir /work/shared/data --out runs/captum

A Hugging Face BertForSequenceClassification is built from a BertConfig (no download) on a
character vocabulary of the hotel reviews (dataset.py's split; tig.hub.vocabulary),
trained briefly in PyTorch on the train split, saved with save_pretrained, and loaded into a
KerasHub BertTextClassifier through KerasHub's own converter (from_preset on the folder, offline).
That converter ports the backbone only, not the classifier head: the head (one Dense) is carried
over explicitly, and the two models' logits are compared on the texts explained.

Then the same test texts are explained on both sides with the same rule, steps, baseline and target:
  Captum:  LayerIntegratedGradients on bert.embeddings.word_embeddings, method gausslegendre,
           baseline [CLS] [PAD]... [SEP] (its BERT tutorial's), target the predicted logit; scores
           summed over the embedding axis.
  ours:    integrated_gradients(task, {token_ids, padding_mask, segment_ids}, baseline="pad",
           rule="gausslegendre"): special tokens keep their embedding, so it is the same baseline.
Both get the texts sorted by length in batches of BATCH texts, padded to a multiple of PAD_TO with
the attention / padding mask; both run on THREADS threads, warm (one untimed pass each first), then
REPEATS timed passes each, interleaved, medians reported. Ours runs with its defaults (no XLA unless
TIG_XLA=1, chunks of engine.CHUNK_ROWS); a third explainer, ours with the whole last encoder layer
(tig/first_token.py off), shows what the first-token path is worth.
Reported: per-token agreement (max over texts of ||a - b|| / ||b||), both completeness deltas,
seconds per text at --steps, and at equal completeness (|delta| <= 1% of |F(x) - F(x')| for
every text: the project's steps="auto", per text; Captum's n_steps doubled from 16, the same
schedule, until every text holds). Writes OUT/captum.json and prints a Markdown table.
"""
import json
import os
import tempfile
import time

import numpy as np

from tig.cli import quiet_tensorflow
from tig.errors import UserError

INSTALL = "pip install torch==2.13.0 captum transformers"
N_TEXTS = 50
from tig.defaults import STEPS  # noqa: E402
LAYERS = 2
HIDDEN = 128
HEADS = 4
TRAIN_STEPS = 300
TRAIN_BATCH = 32
LEARNING_RATE = 5e-4
SEED = 0
MAX_TOKENS = 128          # [CLS] + up to 126 characters + [SEP]
BATCH = 10                # texts per explanation call, both sides
PAD_TO = 16               # batch lengths rounded up to a multiple of this (few graph shapes)
THREADS = 2
REPEATS = 3               # timed passes per explainer (medians reported)
TOLERANCE = 0.01          # equal completeness: |delta| <= 1% of |F(x) - F(x')|
CAPTUM_STEPS = (16, 32, 64, 128, 256, 512)
OUTPUT = "captum.json"


def import_extras():
    """torch, captum and transformers, or a one-line error with the install command."""
    try:
        import captum.attr  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise UserError(f"the Captum comparison needs the optional packages: {INSTALL}") from None
    return torch


# --- one character vocabulary, ids both models take -----------------------------------------

def encode(texts, vocab, max_tokens=MAX_TOKENS):
    """[CLS] + the characters' ids (UNK if unseen, whitespace dropped) + [SEP], per text."""
    index = {t: i for i, t in enumerate(vocab)}
    cls, sep, unk = index["[CLS]"], index["[SEP]"], index["[UNK]"]
    return [[cls] + [index.get(c, unk) for c in t if not c.isspace()][:max_tokens - 2] + [sep] for t in texts]


def pad_batch(rows, pad_to=1):
    """Token id lists -> ids [B, L] (L the longest rounded up to pad_to) and the mask ids != PAD."""
    length = -(-max(len(r) for r in rows) // pad_to) * pad_to
    ids = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, ids != 0


def batches(rows, size=BATCH):
    """Indices of rows sorted by length, in consecutive groups of `size`: similar lengths together."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return [order[i:i + size] for i in range(0, len(order), size)]


# --- the PyTorch model, trained briefly -----------------------------------------------------

def train_torch(train_rows, labels, vocab_size, classes, layers, hidden, steps, seed):
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, min(HEADS, hidden // 32)), intermediate_size=2 * hidden,
                        max_position_embeddings=MAX_TOKENS, num_labels=classes, pad_token_id=0)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        pick = rng.choice(len(train_rows), TRAIN_BATCH, replace=False)
        ids, mask = pad_batch([train_rows[i] for i in pick])
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                    labels=torch.tensor(labels[pick].astype(np.int64)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


def to_keras_hub(model, vocab, folder):
    """The same weights as a KerasHub BertTextClassifier: save_pretrained + vocab.txt, then
    KerasHub's converter (from_preset, offline) for the backbone; the head it leaves untrained
    (output_dense) gets the HF classifier's weights."""
    import keras_hub
    model.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": False, "tokenizer_class": "BertTokenizer"}, f)
    task = keras_hub.models.BertTextClassifier.from_preset(folder, num_classes=model.config.num_labels)
    head = model.classifier
    task.output_dense.set_weights([head.weight.detach().numpy().T, head.bias.detach().numpy()])
    return task


# --- the two explainers ------------------------------------------------------------------------

def captum_ig(model, groups, rows, targets, steps, internal_batch_size=None):
    """Captum LayerIntegratedGradients per group: (scores per text, deltas, seconds)."""
    import torch
    from captum.attr import LayerIntegratedGradients

    def forward(ids, mask):
        return model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits

    lig = LayerIntegratedGradients(forward, model.bert.embeddings.word_embeddings)
    scores, deltas = [None] * len(rows), np.zeros(len(rows))
    start = time.perf_counter()
    for group in groups:
        ids, mask = pad_batch([rows[i] for i in group], PAD_TO)
        ids_t, mask_t = torch.tensor(ids), torch.tensor(mask.astype(np.int64))
        special = np.isin(ids, SPECIAL_IDS)
        reference = torch.tensor(np.where(special, ids, 0))   # [CLS] [PAD] ... [SEP] [PAD] ...
        attr, delta = lig.attribute(ids_t, baselines=reference, additional_forward_args=(mask_t,),
                                    target=torch.tensor(targets[group]), n_steps=steps, method="gausslegendre",
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
        attr = attr.sum(-1).detach().numpy()
        for k, i in enumerate(group):
            scores[i] = attr[k, :len(rows[i])]
        deltas[group] = delta.detach().numpy()
    return scores, deltas, time.perf_counter() - start


def ours_ig(task, groups, rows, targets, steps, xla=None):
    """The project's integrated_gradients per group: (scores, deltas, steps used, outputs, seconds)."""
    from tig.ig import integrated_gradients
    scores, deltas = [None] * len(rows), np.zeros(len(rows))
    used, gaps = np.zeros(len(rows), np.int64), np.zeros(len(rows))
    start = time.perf_counter()
    for group in groups:
        ids, mask = pad_batch([rows[i] for i in group], PAD_TO)
        a = integrated_gradients(task, features(ids, mask), targets[group], steps=steps, baseline="pad", rule="gausslegendre",
                                 xla=xla)
        for k, i in enumerate(group):
            scores[i] = np.asarray(a.scores[k, :len(rows[i])])
        deltas[group], used[group] = a.delta, a.steps
        gaps[group] = a.output - a.baseline_output
    return scores, deltas, used, gaps, time.perf_counter() - start


SPECIAL_IDS = (0, 2, 3, 4)   # [PAD] [CLS] [SEP] [MASK] in tig.hub.SPECIALS order


def whole_last_layer(task, groups, rows):
    """The task's Split without the first-token path (tig/first_token.py): every position of the last
    encoder layer computed, as the model itself does; what that path saves is measured against it."""
    from tig.embedding_split import build_intercepted
    from tig.model_io import HubInputs, prepare_inputs
    ids, mask = pad_batch([rows[i] for i in groups[0]], PAD_TO)
    hub = HubInputs.of(task)
    context = prepare_inputs(task, features(ids, mask))
    return build_intercepted(task, None, context, hub, first_token=False)


def features(ids, mask):
    return {"token_ids": ids.astype(np.int32), "padding_mask": mask, "segment_ids": np.zeros_like(ids, np.int32)}


def median(values):
    return float(np.median(list(values)))


def logits_both(model, task, groups, rows):
    import torch
    torch_logits, keras_logits = np.zeros((len(rows), model.config.num_labels)), None
    keras_logits = np.zeros_like(torch_logits)
    with torch.no_grad():
        for group in groups:
            ids, mask = pad_batch([rows[i] for i in group], PAD_TO)
            torch_logits[group] = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                                        token_type_ids=torch.zeros_like(torch.tensor(ids))).logits.numpy()
            keras_logits[group] = np.asarray(task(features(ids, mask), training=False))
    return torch_logits, keras_logits


def compare(args):
    """The whole comparison; returns the result dict (written to OUT/captum.json by main)."""
    torch = import_extras()
    from tig import hub
    from tig.dataset import load_task
    torch.set_num_threads(args.threads)
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:    # TensorFlow already ran in this process (a test session): its threads stay
        pass

    data = load_task("hotel", args.data_dir)
    vocab = hub.vocabulary(data.train.texts)
    assert [vocab.index(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")] == list(SPECIAL_IDS)
    t0 = time.perf_counter()
    model = train_torch(encode(data.train.texts, vocab), np.asarray(data.train.labels), len(vocab), len(data.classes),
                        args.layers, args.hidden, args.train_steps, args.seed)
    train_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        task = to_keras_hub(model, vocab, folder)

    rows = encode(data.test.texts[:args.n], vocab)
    groups = batches(rows, args.batch)
    torch_logits, keras_logits = logits_both(model, task, groups, rows)
    logit_max_diff = float(np.abs(torch_logits - keras_logits).max())
    targets = torch_logits.argmax(1)
    accuracy = float(np.mean(targets == np.asarray(data.test.labels[:args.n])))

    # warm: one untimed pass each (traces, allocator); then REPEATS timed passes each on the same
    # texts, interleaved (ours, Captum, ours, ...) so a slow spell of the machine hits both; medians
    full_layer = whole_last_layer(task, groups, rows)
    captum_ig(model, groups, rows, targets, args.steps, args.internal_batch_size)
    ours_ig(task, groups, rows, targets, args.steps)
    ours_ig(full_layer, groups, rows, targets, args.steps)
    c_runs, o_runs, f_runs = [], [], []
    for _ in range(args.repeats):
        o_runs.append(ours_ig(task, groups, rows, targets, args.steps))
        c_runs.append(captum_ig(model, groups, rows, targets, args.steps, args.internal_batch_size))
        f_runs.append(ours_ig(full_layer, groups, rows, targets, args.steps))
    c_scores, c_delta, _ = c_runs[0]
    o_scores, o_delta, _, gaps, _ = o_runs[0]
    c_seconds, o_seconds = median(r[-1] for r in c_runs), median(r[-1] for r in o_runs)
    f_seconds = median(r[-1] for r in f_runs)
    rel = [float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)) for a, b in zip(o_scores, c_scores)]
    rel_full = max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
                   for a, b in zip(f_runs[0][0], c_scores))

    # equal completeness: ours steps="auto" (per text, its own schedule) against Captum's n_steps
    # raised through the same schedule until every text holds; then both timed REPEATS times
    ours_auto = ours_ig(task, groups, rows, targets, "auto")
    ours_auto_ok = bool(np.all(np.abs(ours_auto[1]) <= TOLERANCE * np.abs(ours_auto[3]) + 1e-7))
    captum_auto = None
    for n in CAPTUM_STEPS:
        _, delta, _ = captum_ig(model, groups, rows, targets, n, args.internal_batch_size)
        if np.all(np.abs(delta) <= TOLERANCE * np.abs(gaps) + 1e-7):
            captum_auto = n
            break
    a_runs, ca_runs = [], []
    for _ in range(args.repeats):
        a_runs.append(ours_ig(task, groups, rows, targets, "auto")[-1])
        if captum_auto:
            ca_runs.append(captum_ig(model, groups, rows, targets, captum_auto, args.internal_batch_size)[-1])
    auto_seconds = median(a_runs)
    captum_auto = captum_auto and (captum_auto, median(ca_runs))

    n_texts = len(rows)
    result = {
        "texts": n_texts, "steps": args.steps, "threads": args.threads, "batch": args.batch,
        "internal_batch_size": args.internal_batch_size, "layers": args.layers, "hidden": args.hidden,
        "train_steps": args.train_steps, "train_seconds": train_seconds, "test_accuracy_of_explained": accuracy,
        "tokens_mean": float(np.mean([len(r) for r in rows])),
        "logit_max_diff": logit_max_diff, "max_rel_diff": max(rel), "median_rel_diff": float(np.median(rel)),
        "ours_max_abs_delta": float(np.max(np.abs(o_delta))), "captum_max_abs_delta": float(np.max(np.abs(c_delta))),
        "ours_seconds_per_text": o_seconds / n_texts, "captum_seconds_per_text": c_seconds / n_texts,
        "speed_ratio": c_seconds / o_seconds,
        "ours_auto_steps_mean": float(ours_auto[2].mean()), "ours_auto_steps_max": int(ours_auto[2].max()),
        "ours_auto_all_within_tolerance": ours_auto_ok,
        "ours_auto_seconds_per_text": auto_seconds / n_texts,
        "captum_equal_completeness_steps": captum_auto and captum_auto[0],
        "captum_equal_completeness_seconds_per_text": captum_auto and captum_auto[1] / n_texts,
        "equal_completeness_speed_ratio": captum_auto and captum_auto[1] / auto_seconds,
        "ours_whole_last_layer_seconds_per_text": f_seconds / n_texts,
        "ours_whole_last_layer_max_rel_diff": rel_full, "repeats": args.repeats,
        "tolerance": TOLERANCE,
        "torch": torch.__version__, "tensorflow": tf.__version__,
        "load_average": os.getloadavg(),
    }
    return result


def table(r):
    eq = r["captum_equal_completeness_steps"]
    lines = [f"### Same BERT ({r['layers']} layers, hidden {r['hidden']}), {r['texts']} hotel test texts, "
             f"{r['threads']} threads, batches of {r['batch']} texts",
             "",
             f"logits max |diff| {r['logit_max_diff']:.2e}; per-token scores max relative L2 diff "
             f"{r['max_rel_diff']:.2e} (median {r['median_rel_diff']:.2e})",
             "",
             "| explainer | steps | max abs delta | s per text | texts per s |",
             "|---|---|---|---|---|",
             f"| Captum LayerIntegratedGradients | {r['steps']} | {r['captum_max_abs_delta']:.2e} | "
             f"{r['captum_seconds_per_text']:.4f} | {1 / r['captum_seconds_per_text']:.1f} |",
             f"| ours integrated_gradients | {r['steps']} | {r['ours_max_abs_delta']:.2e} | "
             f"{r['ours_seconds_per_text']:.4f} | {1 / r['ours_seconds_per_text']:.1f} |",
             f"| ours, whole last layer (no first-token path) | {r['steps']} | | "
             f"{r['ours_whole_last_layer_seconds_per_text']:.4f} | {1 / r['ours_whole_last_layer_seconds_per_text']:.1f} |",
             f"| Captum, n_steps for 1% on every text | {eq if eq else '> 512'} | | "
             + (f"{r['captum_equal_completeness_seconds_per_text']:.4f} | "
                f"{1 / r['captum_equal_completeness_seconds_per_text']:.1f} |" if eq else "| |"),
             f"| ours steps=\"auto\" (per text) | mean {r['ours_auto_steps_mean']:.1f}, max {r['ours_auto_steps_max']} | | "
             f"{r['ours_auto_seconds_per_text']:.4f} | {1 / r['ours_auto_seconds_per_text']:.1f} |",
             "",
             f"speed ratio (ours texts/s over Captum's) at {r['steps']} steps: {r['speed_ratio']:.2f}x"
             + (f"; at equal completeness: {r['equal_completeness_speed_ratio']:.2f}x" if eq else ""),
             f"load average during the run: {', '.join(f'{x:.2f}' for x in r['load_average'])}"]
    return "\n".join(lines)


def parse_args(argv=None):
    from tig.cli import ArgumentParser, int_range
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("--out", default=os.path.join("runs", "captum"), help="output folder for captum.json")
    p.add_argument("-n", type=int_range(1), default=N_TEXTS, help="test texts explained")
    p.add_argument("--steps", type=int_range(1, 512), default=STEPS, help="integration steps, both sides")
    p.add_argument("--layers", type=int_range(1, 12), default=LAYERS, help="BERT encoder layers")
    p.add_argument("--hidden", type=int_range(8, 1024), default=HIDDEN, help="BERT hidden size")
    p.add_argument("--train-steps", type=int_range(0), default=TRAIN_STEPS,
                   help=f"PyTorch training steps (batches of {TRAIN_BATCH} hotel training texts)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the weights and the training batches")
    p.add_argument("--batch", type=int_range(1), default=BATCH, help="texts per explanation call (both sides)")
    p.add_argument("--internal-batch-size", type=int_range(1), default=None,
                   help="Captum's internal_batch_size (default: a whole batch's texts x steps at once)")
    p.add_argument("--threads", type=int_range(1), default=THREADS, help="threads of torch and TensorFlow")
    p.add_argument("--repeats", type=int_range(1), default=REPEATS, help="timed passes per explainer (median)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import_extras()      # before TensorFlow and training: a missing package is one line
    quiet_tensorflow()
    from tig.files import atomic_write, prepare_output_dir
    prepare_output_dir(args.out, [OUTPUT])
    result = compare(args)
    print(table(result))
    atomic_write(os.path.join(args.out, OUTPUT), json.dumps(result, indent=1) + "\n")
    print(f"wrote {os.path.join(args.out, OUTPUT)}")
    return result


if __name__ == "__main__":
    from tig.cli import run
    run(main)
