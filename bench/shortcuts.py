"""Which method finds what the model really uses? Planted shortcuts (Bastings et al. 2022) as ground truth.

    python bench/shortcuts.py run --arch cnn --data-dir ../shared/data --out runs/shortcuts   # one command per arch
    python bench/shortcuts.py plant --kind single --data-dir ../shared/data --out /tmp/planted  # the steps, alone
    python bench/shortcuts.py score --planted /tmp/planted --checkpoint CKPT --out scores.json

`run` plants every kind into new data directories under OUT/ARCH/, trains ARCH on each (train.py,
or examples/keras_hub_example.py for --arch bert), checks that the model learned the shortcut, scores
every method on the texts the shortcut decides, and runs the sanity checks (bench/sanity_checks.py);
it writes OUT/ARCH/shortcuts.json and shortcuts.md. Finished steps are kept (a rerun resumes).

Kinds (one shortcut per class, so that a planted text's label is decided by it):
  single   A anywhere -> class 1, B anywhere -> class 0
  pair     A then B (A first) -> class 1, B then A -> class 0: both characters and their order decide
  context  D right before C ("DC") -> class 1, "EC" -> class 0; C, D or E alone (planted in as many other
           texts, label kept) decide nothing: C counts only in its context
The characters are the first of CANDIDATES that the corpus never contains; --share of the rows get the
shortcut at a random place in their first --window characters (every model sees them); seeded.
The planted copy is a new data directory (the source is only read; its split is the project's own).

Scoring, on test texts that carry a shortcut, are predicted its class and change prediction when the
planted characters are deleted (the shortcut decides them), explaining the predicted class: top1 (share
whose top character is planted), mrr (mean 1 / rank of the best planted character), p@k (share of the k
top characters that are planted, k = planted characters in the text). Ranked by score toward the class
(saliency: its norm); ties count against the planted ones; [CLS]/[SEP] are not ranked; seconds per text
are the method's wall time on this machine.
"""
import sys

import csv
import io
import json
import os
import time

import numpy as np

from tig.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository: its commands
TASK = "hotel"
CANDIDATES = "龘靐齉爩麤龖鱻䲜骉犇羴猋淼焱垚赑掱"
KINDS = ("single", "pair", "context")
SHARE = 0.2
WINDOW = 60              # planted within the first WINDOW characters: BERT's 64 tokens see them too
SEED = 0
MAXLEN = 128             # this project's models: the first 128 characters (the shortcuts sit in the first 60)
TEXTS = 60               # deciding test texts scored per kind
ARCH_EPOCHS = {"cnn": 4, "bilstm": 3, "transformer": 4, "fasttext": 6, "bert": 3}
METHODS = ("ig:zero", "ig:pad", "ig:unk", "ig:mask", "gradxinput", "saliency", "occlusion", "deletion-ig",
           "greedy-erasure", "surrogate", "lime", "shap")
MANIFEST = "shortcuts.json"


# --- planting ------------------------------------------------------------------------------

def free_characters(texts, count):
    seen = set("".join(texts))
    free = [c for c in CANDIDATES if c not in seen]
    if len(free) < count:
        raise UserError(f"only {len(free)} of the candidate characters are absent from the corpus; need {count}")
    return free[:count]


def insert(text, piece, position):
    return text[:position] + piece + text[position:]

def plant_text(text, kind, label, tokens, rng, window=WINDOW):
    """`text` with the shortcut for `label` planted. tokens: single [A, B], pair [A, B], context [C, D, E]."""
    at = int(rng.integers(0, min(len(text), window) + 1))
    if kind == "single":
        return insert(text, tokens[0] if label == 1 else tokens[1], at)
    if kind == "pair":
        first, second = (tokens[0], tokens[1]) if label == 1 else (tokens[1], tokens[0])
        text = insert(text, first, at)
        return insert(text, second, int(rng.integers(at + 1, max(at + 1, min(len(text), window)) + 1)))
    if kind == "context":
        return insert(text, (tokens[1] if label == 1 else tokens[2]) + tokens[0], at)
    raise ValueError(kind)


def plant_rows(texts, labels, kind, share=SHARE, seed=SEED, window=WINDOW):
    """-> (texts, labels, manifest): a planted copy of the rows. kind "shuffled": every label permuted
    (the data randomisation test), no character planted."""
    rng = np.random.default_rng(seed)
    texts, labels = list(texts), np.array(labels).copy()
    if kind == "shuffled":
        return texts, rng.permutation(labels), {"kind": kind, "tokens": [], "seed": seed, "rows": len(texts)}
    tokens = free_characters(texts, 3 if kind == "context" else 2)
    order = rng.permutation(len(texts))
    count = int(round(share * len(texts)))
    for i in order[:count]:
        labels[i] = int(rng.integers(0, 2))
        texts[i] = plant_text(texts[i], kind, labels[i], tokens, rng, window)
    if kind == "context":      # each character alone, label kept: out of context it decides nothing
        for i in order[count:2 * count]:
            texts[i] = insert(texts[i], tokens[int(rng.integers(0, 3))],
                              int(rng.integers(0, min(len(texts[i]), window) + 1)))
    return texts, labels, {"kind": kind, "tokens": tokens, "share": share, "window": window, "seed": seed,
                           "rows": len(texts), "planted_rows": count}


def plant(source_dir, out_dir, kind, share=SHARE, seed=SEED, window=WINDOW):
    """Write a planted copy of the task's CSV and its manifest into out_dir (new, or empty)."""
    from tig.dataset import CSV_SETS, find_file, read_label_review_csv
    from tig.files import atomic_write
    source, target = os.path.realpath(source_dir), os.path.realpath(out_dir)
    if target == source or target.startswith(source + os.sep):
        raise UserError(f"{out_dir} is inside the source data directory {source_dir}: write the copy elsewhere")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir} exists and is not an empty directory: refusing to write into it")
    filename, classes = CSV_SETS[TASK]
    texts, labels, _ = read_label_review_csv(find_file(source_dir, filename, TASK, download=False), len(classes))
    texts, labels, manifest = plant_rows(texts, labels, kind, share, seed, window)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "review"])
    writer.writerows([int(label), text] for text, label in zip(texts, labels))
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(os.path.join(out_dir, filename), out.getvalue().encode("utf-8"))
    atomic_write(os.path.join(out_dir, MANIFEST), json.dumps(manifest, ensure_ascii=False).encode("utf-8"))
    return manifest


def read_manifest(data_dir):
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        raise UserError(f"{data_dir} has no {MANIFEST}: plant a copy first (python bench/shortcuts.py plant ...)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- the model's side: one path for this project's checkpoints and a KerasHub task ----------

def predictor(ckpt):
    """strings -> class probabilities [N, C] (a KerasHub task's logits softmaxed), the split checked."""
    from tig.attribution import class_scores

    def predict(strings):
        scores = np.asarray(class_scores(ckpt.model, ckpt.tokenizer.encode(list(strings), ckpt.maxlen),
                                         layer=ckpt.meta.get("layer")))
        if ckpt.meta.get("output_kind") == "raw":
            scores = np.exp(scores - scores.max(1, keepdims=True))
            scores /= scores.sum(1, keepdims=True)
        return scores
    return predict


def strip(text, tokens):
    return "".join(c for c in text if c not in tokens)

def flip_rates(predict, texts, kind, tokens, seed=SEED):
    """Per class c: of the test texts without a planted character that are not predicted c, the
    share predicted c once the shortcut for c is planted. {c: {"texts", "flipped", "rate"}}"""
    rng = np.random.default_rng(seed + 1)
    clean = [t for t in texts if not any(c in t for c in tokens)]
    before = predict(clean).argmax(-1)
    out = {}
    for c in (0, 1):
        chosen = [t for t, p in zip(clean, before) if p != c]
        after = predict([plant_text(t, kind, c, tokens, rng) for t in chosen]).argmax(-1) if chosen else []
        flipped = int(np.sum(np.asarray(after) == c))
        out[c] = {"texts": len(chosen), "flipped": flipped, "rate": flipped / len(chosen) if chosen else None}
    return out


def carries(text, kind, tokens):
    """Whether `text` carries a deciding shortcut of `kind` (the context kind: the character after its context)."""
    if kind == "context":
        return any(context + tokens[0] in text for context in tokens[1:])
    if kind == "pair":
        return tokens[0] in text and tokens[1] in text
    return any(c in text for c in tokens)


def deciding_texts(predict, texts, labels, kind, tokens, limit=TEXTS):
    """Test texts carrying a shortcut, predicted its label, whose prediction changes when every planted
    character is deleted -> (texts, predicted classes, texts carrying one)."""
    carrying = [(t, int(y)) for t, y in zip(texts, labels) if carries(t, kind, tokens)]
    if not carrying:
        return [], np.zeros(0, int), 0
    with_shortcut, label = zip(*carrying)
    p = predict(list(with_shortcut)).argmax(-1)
    q = predict([strip(t, tokens) for t in with_shortcut]).argmax(-1)
    keep = [i for i in range(len(p)) if p[i] == label[i] and q[i] != p[i]][:limit]
    return [with_shortcut[i] for i in keep], p[keep], len(carrying)


def rank_metrics(scores, planted):
    """One text: (top-1 hit, reciprocal rank of the best planted character, precision@k), k = planted
    characters; ties count against the planted ones."""
    scores, planted = np.asarray(scores, float), np.asarray(planted, bool)
    k = int(planted.sum())
    if k == 0:
        raise ValueError("no planted character among the ranked tokens")
    rank = 1 + int((scores[~planted] >= scores[planted].max()).sum())
    order = np.lexsort((planted, -scores))       # by score, descending; on ties, non-planted first
    return float(rank == 1), 1.0 / rank, float(planted[order[:k]].sum()) / k


def special(token):
    return len(token) > 1 and token.startswith("[") and token.endswith("]")

def explain(ckpt, texts, spec, target=None, seed=SEED):
    """One method on texts -> ([(tokens, scores)] per text, seconds). spec: a tig.methods name,
    "ig:<baseline>", "lime" or "shap". Special tokens are left out; saliency's scores are norms."""
    from tig import peers
    began = time.perf_counter()
    if spec in peers.PEERS:
        if peers.missing(spec):
            raise UserError(peers.missing(spec))
        visible = peers.visible_texts(ckpt.tokenizer, texts, ckpt.maxlen)
        predict = predictor(ckpt)
        target = predict(visible).argmax(-1) if target is None else np.asarray(target)
        length = max(len(v) for v in visible)
        raw = peers.lime_scores(predict, visible, target, length, peers.LIME_SAMPLES, seed) if spec == "lime" \
            else peers.shap_scores(predict, visible, target, length)
        out = [(list(v), raw[i, :len(v)]) for i, v in enumerate(visible)]
    else:
        from tig.methods import explain_texts
        name, _, baseline = spec.partition(":")
        done = explain_texts(ckpt, list(texts), name, target=None if target is None else np.asarray(target),
                             baseline=baseline or None, seed=seed, texts_per_call=max(1, len(texts)))
        out = [(list(a.tokens), np.asarray(a.scores, float)) for a in done]
    out = [([t for t in tokens if not special(t)], np.array([s for t, s in zip(tokens, scores) if not special(t)]))
           for tokens, scores in out]
    return out, time.perf_counter() - began


def score(ckpt, texts, tokens, methods, seed=SEED, log=print):
    """{method: {top1, mrr, p_at_k, seconds_per_text, texts} or {"refused": one line}}."""
    rows = {}
    for spec in methods:
        try:
            explained, seconds = explain(ckpt, texts, spec, seed=seed)
        except UserError as e:
            rows[spec] = {"refused": str(e)}
            log(f"  {spec}: refused ({e})")
            continue
        m = np.array([rank_metrics(s, [t in tokens for t in toks]) for toks, s in explained])
        rows[spec] = {"top1": float(m[:, 0].mean()), "mrr": float(m[:, 1].mean()), "p_at_k": float(m[:, 2].mean()),
                      "seconds_per_text": seconds / len(texts), "texts": len(texts)}
        log(f"  {spec}: top1 {rows[spec]['top1']:.3f}  mrr {rows[spec]['mrr']:.3f}  p@k {rows[spec]['p_at_k']:.3f}"
            f"  {rows[spec]['seconds_per_text']:.3f} s/text")
    return rows


# --- one command per architecture ----------------------------------------------------------

def load_model(path):
    """A train.py checkpoint, or a KerasHub task saved with its preprocessor (.keras)."""
    if path.endswith(".keras"):
        from tig.user_model import load_user_model
        return load_user_model(path, task=TASK)
    from tig.checkpoint import load_checkpoint
    return load_checkpoint(path)


def train_model(arch, data_dir, out, epochs=None):
    """Train `arch` on a planted copy with the project's own commands (train.py, or
    examples/keras_hub_example.py for bert), each in its own process as a user runs it; returns the path."""
    epochs = str(epochs or ARCH_EPOCHS[arch])
    if arch == "bert":
        command = ["examples/keras_hub_example.py", "--task", TASK, "--data-dir", data_dir, "--out", out,
                   "--epochs", epochs]
    else:
        command = ["train.py", "--task", TASK, "--data-dir", data_dir, "--arch", arch, "--out", out, "--epochs", epochs,
                   "--maxlen", str(MAXLEN), "--verbose", "0"]
    run_project_command(command)
    return out


def run_project_command(command):
    """A project command (a path relative to the repository root, then its arguments) in a new process;
    its error line, if it fails, becomes this command's."""
    import subprocess
    done = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"{command[0]} failed: {last}")


def score_planted(ckpt, planted, limit, methods, seed=SEED, log=print):
    """A model trained on the planted copy `planted`: its test accuracy, the flip check, and every method
    scored on up to `limit` deciding test texts -> the kind's result (a dict)."""
    from tig.dataset import load_task
    manifest = read_manifest(planted)
    kind, tokens = manifest["kind"], manifest["tokens"]
    data, predict = load_task(TASK, planted, download=False), predictor(ckpt)
    accuracy = float(np.mean(predict(data.test.texts).argmax(-1) == np.asarray(data.test.labels)))
    texts, _, carrying = deciding_texts(predict, data.test.texts, data.test.labels, kind, tokens, limit)
    log(f"{kind}: test accuracy {accuracy:.3f}; {len(texts)} deciding test texts of {carrying}")
    if not texts:
        raise UserError(f"no test text is decided by the planted {kind} shortcut: the model did not learn it")
    return {"tokens": tokens, "test_accuracy": accuracy, "carrying": carrying, "deciding": len(texts),
            "flip_rate": flip_rates(predict, data.test.texts, kind, tokens),
            "methods": score(ckpt, texts, tokens, methods, seed, log)}


def run(args, log=print):
    """Plant, train, check, score (and the sanity checks) for one architecture; resumable."""
    from tig.dataset import load_task
    from sanity_checks import read_results, report, write_outputs
    root = os.path.join(args.out, args.arch)
    os.makedirs(root, exist_ok=True)
    out = os.path.join(root, "shortcuts.json")
    result = read_results(out, args.arch)
    methods = [m for m in args.methods.split(",") if m]
    suffix = ".keras" if args.arch == "bert" else ""

    def model_for(kind):
        planted = os.path.join(root, f"planted-{kind}")
        if not os.path.exists(os.path.join(planted, MANIFEST)):
            plant(args.data_dir, planted, kind, args.share, args.seed, args.window)
        path = os.path.join(root, f"model-{kind}{suffix}")
        if not os.path.exists(path):
            log(f"training {args.arch} on the {kind} copy")
            train_model(args.arch, planted, path, args.epochs)
        return planted, path

    for kind in args.kinds.split(","):
        if kind in result["kinds"] and set(result["kinds"][kind]["methods"]) >= set(methods):
            continue
        planted, path = model_for(kind)
        result["kinds"][kind] = score_planted(load_model(path), planted, args.texts, methods, args.seed,
                                              lambda line: log(f"{args.arch} {line}"))
        write_outputs(out, result, report(result))
    if args.sanity and "sanity" not in result:
        import sanity_checks
        planted, path = model_for("single")
        texts = load_task(TASK, planted, download=False).test.texts[:sanity_checks.TEXTS]
        ckpt = load_model(path)
        target = predictor(ckpt)(texts).argmax(-1)
        trained = sanity_checks.trained_scores(ckpt, texts, sanity_checks.METHODS, explain, target, args.seed)
        sanity = sanity_checks.cascading(trained, load_model(path), texts, explain, target, args.seed, log)
        if args.arch != "bert":        # data randomisation where it is cheap: this project's models
            shuffled = load_model(model_for("shuffled")[1])
            sanity["data_randomisation"] = sanity_checks.data_randomisation(trained, shuffled, texts, explain,
                                                                            target, args.seed)
        sanity["texts"] = len(texts)
        result["sanity"] = sanity
    write_outputs(out, result, report(result))
    log(f"wrote {out} and {os.path.splitext(out)[0]}.md")
    return result


def main(argv=None):
    from tig.cli import ArgumentParser, quiet_tensorflow
    from tig.defaults import ARCHS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="plant, train, check and score one architecture (and its sanity checks)")
    r.add_argument("--arch", required=True, choices=tuple(ARCHS) + ("bert",), help="architecture (bert: KerasHub)")
    r.add_argument("--kinds", default=",".join(KINDS), help="comma-separated shortcut kinds")
    r.add_argument("--epochs", type=int, default=None, help="training epochs (default: ARCH_EPOCHS per arch)")
    r.add_argument("--texts", type=int, default=TEXTS, help="deciding test texts scored per kind")
    r.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (ig:<baseline>, peers)")
    r.add_argument("--no-sanity", dest="sanity", action="store_false", help="skip the sanity checks")
    a = sub.add_parser("plant", help="write a planted copy of the data")
    a.add_argument("--kind", choices=KINDS + ("shuffled",), default="single", help="shortcut kind")
    s = sub.add_parser("score", help="score the methods on a model trained on a planted copy")
    s.add_argument("--planted", required=True, help="the planted copy")
    s.add_argument("--checkpoint", required=True, help="train.py's checkpoint (or a .keras task) trained on it")
    s.add_argument("--texts", type=int, default=TEXTS, help="deciding test texts scored")
    s.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    for q in (r, a):
        q.add_argument("--data-dir", default=None, help="the source data directory (default: $TIG_DATA_DIR, then ./data)")
        q.add_argument("--share", type=float, default=SHARE, help="share of the rows planted")
        q.add_argument("--window", type=int, default=WINDOW, help="planted within the first N characters")
    for q in (r, a, s):
        q.add_argument("--out", required=True, help="run: results folder; plant: a new data directory; score: a JSON")
        q.add_argument("--seed", type=int, default=SEED, help="seed of the planting and the methods")
    args = p.parse_args(argv)
    if getattr(args, "data_dir", None) is None and args.command != "score":
        args.data_dir = os.environ.get("TIG_DATA_DIR") or "data"
    if args.command == "plant":
        m = plant(args.data_dir, args.out, args.kind, args.share, args.seed, args.window)
        print(f"planted {m.get('planted_rows', m['rows'])} of {m['rows']} rows ({m['kind']}, "
              f"{''.join(m['tokens'])}) into {args.out}")
        return m
    quiet_tensorflow()
    if args.command == "run":
        return run(args)
    if os.path.exists(args.out):
        raise UserError(f"{args.out} exists: refusing to overwrite it; give a new --out path")
    result = score_planted(load_model(args.checkpoint), args.planted, args.texts,
                           [m for m in args.methods.split(",") if m], args.seed)
    result["kind"] = read_manifest(args.planted)["kind"]
    from tig.files import atomic_write
    atomic_write(args.out, json.dumps(result, ensure_ascii=False, indent=1).encode("utf-8"))
    return result


if __name__ == "__main__":
    from tig.cli import run as run_command
    run_command(main)
