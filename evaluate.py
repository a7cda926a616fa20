"""Faithfulness of the explanations: do the characters a method ranks first really drive the model?

    python evaluate.py --task hotel --data-dir DIR -n 500

For each method (integrated gradients `ig` with each baseline, gradient x input `gradxinput`,
the gradient's L2 norm `saliency`, and a seeded `random` order; with `--methods all` also leave-one-out
`occlusion`, the deletion `surrogate` and `deletion-ig`, IG averaged over random deletions (tig/perturbation.py),
`greedy-erasure`, a greedy deletion search guided by deletion IG (tig/erasure.py), and the peers `lime` and `shap` when installed
(tig/peers.py)), on the first n texts of the test split, explaining the predicted class y with p = p(y | text):

  comprehensiveness@k = p(text) - p(text without its top-k% tokens)   higher = more faithful
  sufficiency@k       = p(text) - p(only its top-k% tokens)           lower  = more faithful
  AOPC                = the mean over k in {1, 5, 10, 20, 50}%          (ERASER, DeYoung et al. 2020)
  log-odds@20%        = mean log(p(without top 20%) / p(text))          lower  = more faithful (DIG, Sanyal & Ren 2021)
  deletion curve      = mean p as 0..100% of the tokens are removed in ranked order; its area (AUC, lower = better)
  complete            = share of texts with IG's |delta| <= 1% of |F(x) - F(x')|

Each method's seconds per text (this run, all texts explained in one go) are reported beside its scores.
top-k% is ceil(k% of the text's tokens). "Remove" deletes the characters and re-encodes
(default); `--removal pad|unk` replaces them in place with PAD or UNK instead.
Writes a JSON file and a deletion-curve PNG, and prints a Markdown table.
"""
import json
import os
import sys

import numpy as np

from tig.cli import quiet_tensorflow
from tig.errors import UserError, printable
from tig.defaults import STEPS
from tig.faithfulness import CURVE, KS, REMOVALS, faithfulness, top_token_agreement
from tig.methods import METHODS
from tig.validate import BASELINES
from tig.tokenizer import PAD_ID

SAMPLES = 500
DEFAULT_METHODS = ("ig", "gradxinput", "saliency", "random")   # any name of tig/methods.py, "random", or a peer
NATIVE = DEFAULT_METHODS + tuple(m for m in METHODS if m not in DEFAULT_METHODS)   # --methods all: and every peer
EXPLAIN_BATCH = 64
RESULTS_DIR = "results"               # git-ignored; one folder per model (default_out_dir)


# --- explanations -------------------------------------------------------------------------

def explain_all(model, token_ids, methods, baselines, steps=STEPS, seed=0, progress=False, layer=None,
                surrogate_samples=None, padding=None):
    """{name: {"scores": [N,L], "complete": [N] bool or None, "steps": [N] or None, "seconds": float}}
    per method (and per IG baseline); complete: Attribution.complete(), |delta| <= 1% of |F(x) - F(x')|
    (IG, and the surrogate if fitted with completeness). seconds: wall time of the method's explanations.
    layer: the Embedding layer of a user's model (None: found, or this project's split)."""
    import time

    from tig.methods import attribute, canonical
    jobs = []
    for method in methods:
        if method == "random":
            jobs.append(("random", None))
        elif canonical(method) == "ig":
            jobs += [(f"ig[{b}]", lambda ids, b=b: attribute(model, ids, "ig", layer=layer, baseline=b, steps=steps))
                     for b in baselines]
        else:
            jobs.append((canonical(method), lambda ids, m=canonical(method): attribute(
                model, ids, m, layer=layer, seed=seed, samples=surrogate_samples, padding=padding)))
    bar = None
    if progress:
        from tig.cli import Progress
        bar = Progress(sum(fn is not None for _, fn in jobs) * len(token_ids), "explanation")   # random: instant
    results, done = {}, 0
    for name, fn in jobs:
        if fn is None:   # a seeded random score per token: the floor every method must beat
            rng = np.random.default_rng(seed)
            results[name] = {"scores": np.where(token_ids != PAD_ID, rng.random(token_ids.shape), 0.0),
                             "complete": None, "steps": None, "seconds": 0.0}
            continue
        scores, gaps, steps_used, began = [], [], [], time.perf_counter()
        for start in range(0, len(token_ids), EXPLAIN_BATCH):
            a = fn(token_ids[start:start + EXPLAIN_BATCH])
            scores.append(a.scores)
            if a.delta is not None:
                gaps.append(a.complete())
            if a.steps is not None:
                steps_used.append(a.steps)
            done += len(a.scores)
            if bar:
                bar.update(done)
        results[name] = {"scores": np.concatenate(scores), "complete": np.concatenate(gaps) if gaps else None,
                         "steps": np.concatenate(steps_used) if steps_used else None,
                         "seconds": time.perf_counter() - began}
    return results


# --- outputs --------------------------------------------------------------------------

def plot_curves(results, path, title):
    from tig.plots import save_figure, setup_matplotlib
    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=130)
    for name, r in results["methods"].items():
        style = {"linestyle": "--", "color": "gray"} if name == "random" else {}
        ax.plot(CURVE, r["deletion_curve"], marker="o", markersize=3, label=f"{name} (AUC {r['deletion_auc']:.3f})",
                **style)
    ax.set_xlabel("fraction of characters removed (most important first)")
    ax.set_ylabel("probability of the predicted class")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def markdown_table(results):
    """The run's table; with LIME in the run, each method's seconds per text also as a multiple of LIME's."""
    first = next(iter(results["methods"]))
    lime = results["methods"].get("lime", {}).get("seconds_per_text")
    head = ("| method | comp. AOPC ↑ | comp.@20% ↑ | suff. AOPC ↓ | suff.@20% ↓ | log-odds@20% ↓ | deletion AUC ↓ "
            f"| complete (±1%) | top token = {first}'s | s/text |" + (" × LIME |" if lime else ""))
    lines = [head, "|" + "---|" * (11 if lime else 10)]
    for name, r in results["methods"].items():
        complete = "" if r.get("complete_share") is None else f"{r['complete_share']:.1%}"
        if r.get("mean_steps") and results["steps"] == "auto":
            complete += f" ({r['mean_steps']:.0f} steps)"
        seconds = r.get("seconds_per_text", 0)
        lines.append(f"| {name} | {r['comprehensiveness_aopc']:.3f} | {r['comprehensiveness_20']:.3f} | "
                     f"{r['sufficiency_aopc']:.3f} | {r['sufficiency_20']:.3f} | {r['log_odds_20']:.3f} | "
                     f"{r['deletion_auc']:.3f} | {complete} | {r['same_top_token_as_first']:.1%} | "
                     f"{seconds:.3g} |" + (f" {seconds / lime:.2f} |" if lime else ""))
    return "\n".join(lines)


def hub_task(ckpt, args):
    """A KerasHub task with its preprocessor: its HubInputs (tokens deleted by id, [CLS]/[SEP] fixed); None
    for a model of ids; other string-input models and the id-deleting methods refused."""
    if ckpt.meta.get("input") != "strings":
        return None
    from tig.model_io import HubInputs
    hub = HubInputs.of(ckpt.model)
    if hub is None or getattr(ckpt.model, "preprocessor", None) is None:
        raise UserError("evaluate.py removes tokens by id, so it needs a model that takes token ids or a KerasHub "
                        "task with its preprocessor; this one takes strings (explain it with visualize.py --model)")
    refused = [m for m in args.methods if m not in ("ig", "gradxinput", "grad", "saliency", "random")]
    if refused or args.removal != "delete":
        raise UserError(f"on a KerasHub task evaluate.py runs ig, gradxinput, saliency and random with --removal "
                        f"delete; not {', '.join(refused) or '--removal ' + args.removal}")
    return hub


def model_source(ckpt):
    """What was evaluated: the checkpoint folder, or the user's model file (absolute)."""
    return os.path.abspath(ckpt.meta.get("source") or ckpt.directory)


def default_out_dir(ckpt, root=RESULTS_DIR):
    """results/<name>: the checkpoint folder's name, or the model file's; a folder that already
    holds another model's results gets a numbered sibling (name-2, ...), never that model's files."""
    source = model_source(ckpt)
    name = os.path.splitext(os.path.basename(source))[0] or "model"
    path, n = os.path.join(root, name), 1
    while os.path.exists(os.path.join(path, "faithfulness.json")):
        try:
            with open(os.path.join(path, "faithfulness.json"), encoding="utf-8") as f:
                if json.load(f).get("model") == source:
                    return path       # this model's earlier results: updated in place
        except (OSError, ValueError, AttributeError):
            pass
        n += 1
        path = os.path.join(root, f"{name}-{n}")
    return path


def parse_args(argv=None):
    from tig.cli import (ArgumentParser, add_model_arguments, add_replace_argument, choice, comma_list, int_range,
                     steps_or_auto)
    from tig.dataset import TASKS
    from tig.methods import ALIASES, canonical
    from tig.validate import MAX_STEPS
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=None, type=choice(TASKS, "task"), help=f"one of: {', '.join(TASKS)}")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (default: checkpoints/<task>, else the most recent under checkpoints/)")
    add_model_arguments(p)
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("-n", type=int_range(1), default=SAMPLES, help="first N texts of the test split")
    from tig.peers import LIME_SAMPLES, PEERS, SHAP_EVALS
    p.add_argument("--methods", default=list(DEFAULT_METHODS), type=comma_list(NATIVE + tuple(ALIASES) + PEERS + ("all",),
                                                                       "method"),
                   help="comma list of: " + ",".join(NATIVE + PEERS) + "; 'all' = every native method and every "
                   "installed peer (default: " + ",".join(DEFAULT_METHODS) + ")")
    p.add_argument("--lime-samples", type=int_range(1), default=LIME_SAMPLES, help="LIME's num_samples per text")
    p.add_argument("--shap-evals", type=int_range(2), default=SHAP_EVALS, help="shap Partition's max_evals per text")
    p.add_argument("--surrogate-samples", type=int_range(1), default=None,
                   help="perturbed texts per text of the deletion surrogate (default: its own, perturbation.SAMPLES)")
    p.add_argument("--baselines", default=list(BASELINES), type=comma_list(BASELINES, "baseline"),
                   help="IG baselines to compare: " + ",".join(BASELINES))
    p.add_argument("--removal", default="delete", choices=REMOVALS,
                   help="How a token is removed: deleted (the text closes up), or replaced by PAD or UNK in place.")
    p.add_argument("--steps", default=STEPS, type=steps_or_auto(MAX_STEPS),
                   help=f"IG steps (1 to {MAX_STEPS}), or 'auto' (adaptive, 1%%)")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed of the random baseline")
    p.add_argument("--out", default=None, help="Output folder (default: results/<checkpoint folder or model file "
                                               "name>, one per model).")
    add_replace_argument(p)
    args = p.parse_args(argv)
    args.methods = list(dict.fromkeys(m if m in PEERS + ("all", "random") else canonical(m) for m in args.methods))
    if "all" in args.methods:
        from tig import peers
        for name in peers.PEERS:
            if peers.missing(name):
                print(f"note: {peers.missing(name)}", file=sys.stderr)
        args.methods = list(NATIVE) + peers.installed()
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_tensorflow()   # after parsing: --help and usage errors never wait for TensorFlow
    import time
    from tig.files import atomic_write, prepare_output_dir
    from tig.cli import resolve_explainable
    from tig.engine import ENGINE
    from tig.attribution import class_scores, split_of
    from tig.deletion import explained_mask
    from tig.dataset import load_task
    from tig import peers
    from tig import perturbation
    wanted_peers = [m for m in args.methods if m in peers.PEERS]
    for name in wanted_peers:
        if peers.missing(name):
            raise UserError(peers.missing(name))
    ckpt = resolve_explainable(args)
    hub = hub_task(ckpt, args)
    import keras
    if ckpt.meta.get("task") is None:
        raise UserError("evaluate.py explains a task's test split: give --task with --model")
    task = args.task or ckpt.meta["task"]
    out = args.out or default_out_dir(ckpt)
    prepare_output_dir(out, ["faithfulness.json", "deletion_curve.png"], args.replace)
    baselines = list(args.baselines)
    if "mask" in baselines and not ckpt.meta.get("mask_rate"):
        baselines.remove("mask")
        if ckpt.meta.get("arch") != "user":
            print("warning: this checkpoint was trained without --mask-rate; skipping the mask baseline",
                  file=sys.stderr)
        elif args.baselines != list(BASELINES):   # asked for by name: say why it is not run
            print("note: the mask baseline needs a checkpoint of train.py trained with --mask-rate; skipped for "
                  "this model", file=sys.stderr)
    test = load_task(task, args.data_dir).test
    texts = test.texts[:args.n]
    # a KerasHub task's own preprocessor makes its ids ([CLS] ... [SEP]); the task takes them as plain ids
    token_ids = np.asarray(hub.features(texts)["token_ids"]) if hub else ckpt.tokenizer.encode(texts, ckpt.maxlen)
    fixed = hub.special_ids if hub else (PAD_ID,)
    padding = "post" if hub else getattr(ckpt.tokenizer, "padding", "post")   # deletions close up on the model's side
    split = split_of(ckpt.model, token_ids[:1], ckpt.meta.get("layer"))   # cached on the model: the one every method uses
    start, traced_before = time.time(), sum(ENGINE.traces_by_kind(split).values())

    def predict(ids):     # the explanations' own static-shape graphs; a KerasHub task's logits as probabilities
        scores = class_scores(ckpt.model, ids, layer=ckpt.meta.get("layer"))
        return np.asarray(keras.ops.softmax(scores.astype(np.float32))) if hub else scores

    probs = predict(token_ids)
    target = probs.argmax(-1)
    explanations = explain_all(ckpt.model, token_ids, [m for m in args.methods if m not in peers.PEERS], baselines,
                               args.steps, args.seed, progress=True, layer=ckpt.meta.get("layer"),
                               surrogate_samples=args.surrogate_samples, padding=padding)
    if wanted_peers:
        explanations.update(peers.explain_peers(ckpt, texts, token_ids, target, wanted_peers,
                                          lime_samples=args.lime_samples, shap_evals=args.shap_evals, seed=args.seed))
    results = {"task": task, "checkpoint": ckpt.directory, "model": model_source(ckpt), "n": len(token_ids), "removal": args.removal,
               "steps": args.steps, "lime_samples": args.lime_samples, "shap_evals": args.shap_evals,
               "surrogate_samples": args.surrogate_samples or perturbation.SAMPLES, "ks_percent": list(KS), "curve_fractions": list(CURVE),
               "accuracy_on_these": float(np.mean(target == test.labels[:len(target)])),
               "command": "python evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv), "methods": {}}
    reference = next(iter(explanations.values()))["scores"]
    for name, explained in explanations.items():
        scores, complete = explained["scores"], explained["complete"]
        r = faithfulness(predict, token_ids, scores, target, args.removal, fixed=fixed, padding=padding)
        r["complete_share"] = None if complete is None else float(np.mean(complete))
        r["mean_steps"] = None if explained["steps"] is None else float(np.mean(explained["steps"]))
        r["same_top_token_as_first"] = top_token_agreement(scores, reference, explained_mask(token_ids, fixed))
        r["seconds_per_text"] = explained["seconds"] / len(token_ids)
        results["methods"][name] = r
        print(f"  {name}: comprehensiveness AOPC {r['comprehensiveness_aopc']:.3f}", file=sys.stderr)
    results["seconds"] = round(time.time() - start, 1)
    results["graphs_traced"] = sum(ENGINE.traces_by_kind(split).values()) - traced_before   # this model's graphs only
    atomic_write(os.path.join(out, "faithfulness.json"), json.dumps(results, ensure_ascii=False, indent=1))
    png = plot_curves(results, os.path.join(out, "deletion_curve.png"),
                      f"{task}: deletion curves, {len(token_ids)} test texts, removal={args.removal}")
    print(f"### {task} (n={len(token_ids)}, removal={args.removal}, {args.steps} steps, {results['seconds']}s, "
          f"{results['graphs_traced']} graphs traced)\n")
    print(markdown_table(results))
    print(f"\nwrote {printable(os.path.join(out, 'faithfulness.json'))} and {printable(png)}")
    return results


if __name__ == "__main__":
    from tig.cli import run
    run(main)
