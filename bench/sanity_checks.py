"""Sanity checks for attributions (Adebayo et al. 2018): an explanation that survives randomising the
model explains the input, not the model.
Used by `python bench/shortcuts.py run` (its methods' `explain` is passed in).

Cascading randomisation: a second, freshly loaded copy of the trained model (the trained one is never
touched) has its weighted layers re-drawn at random, top layer first, down to the embedding, cumulatively;
after each stage every method explains the same texts for the same class, and the Spearman rank
correlation of its scores with the trained model's (per text, over the characters, then averaged) is
reported. A method with |Spearman| >= FLAG after full randomisation is flagged. Data randomisation:
the same against a model trained on shuffled labels (shortcuts.py plants a "shuffled" copy for it).
"""

import json
import os

import numpy as np

FLAG = 0.2
METHODS = ("ig:zero", "ig:pad", "gradxinput", "saliency", "occlusion", "deletion-ig", "surrogate")
TEXTS = 30
SEED = 0


def ranks(values):
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tie = values == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b):
    """Spearman's rank correlation; 0.0 when either side is constant (nothing to rank)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def stages(model):
    """Weighted layers from the top down to the embedding; a nested model (a KerasHub backbone)
    contributes its own layers in the same order."""
    import keras
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(reversed(stages(layer)))
        elif layer.weights:
            out.append(layer)
    return out[::-1]


def randomise(layer, rng):
    """Re-draw a layer's weights: normal, each tensor with its own standard deviation (0.05 where it
    has none, e.g. fresh biases and layer-norm scales). Only ever called on a second loaded copy."""
    for w in layer.weights:
        value = np.asarray(w.numpy())
        w.assign(rng.normal(0.0, float(value.std()) or 0.05, value.shape).astype(value.dtype))


def correlations(first, second):
    return float(np.mean([spearman(a, b) for (_, a), (_, b) in zip(first, second)]))


def trained_scores(ckpt, texts, methods, explain, target, seed=SEED):
    """{method: [(tokens, scores)] per text} on the trained model, or {method: the one-line refusal}.
    explain(model, texts, method, target=, seed=) -> ([(tokens, scores)], seconds); target: the class
    explained, per text (the trained model's prediction, kept for every randomised model)."""
    from tig.errors import UserError
    out = {}
    for spec in methods:
        try:
            out[spec] = explain(ckpt, texts, spec, target=target, seed=seed)[0]
        except UserError as e:
            out[spec] = str(e)
    return out


def cascading(trained, copy, texts, explain, target, seed=SEED, log=print):
    """{"stages": [layer names], method: [mean Spearman with `trained` (trained_scores) after each
    stage], "flagged": [...], "refused": {...}}; `copy` (a second load of the trained checkpoint) is
    randomised in place."""
    methods = [spec for spec, scores in trained.items() if not isinstance(scores, str)]
    out = {"stages": [], "refused": {spec: v for spec, v in trained.items() if isinstance(v, str)}}
    out.update({spec: [] for spec in methods})
    rng = np.random.default_rng(seed)
    for layer in stages(copy.model):
        randomise(layer, rng)
        out["stages"].append(layer.name)
        for spec in methods:
            out[spec].append(correlations(trained[spec], explain(copy, texts, spec, target=target, seed=seed)[0]))
        log(f"  randomised {layer.name}: " + "  ".join(f"{s} {out[s][-1]:.2f}" for s in methods))
    out["flagged"] = [spec for spec in methods if abs(out[spec][-1]) >= FLAG]
    return out


def data_randomisation(trained, shuffled, texts, explain, target, seed=SEED):
    """{method: Spearman between the trained model's scores (trained_scores) and the shuffled-label model's}."""
    return {spec: correlations(scores, explain(shuffled, texts, spec, target=target, seed=seed)[0])
            for spec, scores in trained.items() if not isinstance(scores, str)}


def markdown(result):
    methods = [m for m in result if m not in ("stages", "flagged", "refused", "data_randomisation", "texts")]
    lines = ["| method | " + " | ".join(f"+{s}" for s in result["stages"]) + " | shuffled labels | flagged |",
             "|---|" + "---|" * (len(result["stages"]) + 2)]
    shuffled = result.get("data_randomisation") or {}
    for spec in methods:
        cells = " | ".join(f"{v:.2f}" for v in result[spec])
        shuffle = f"{shuffled[spec]:.2f}" if spec in shuffled else ""
        lines.append(f"| {spec} | {cells} | {shuffle} | {'yes' if spec in result['flagged'] else ''} |")
    return "\n".join(lines) + "\n"


def read_results(path, arch):
    """shortcuts.py run's own results file, to resume from; anything else there is refused, never overwritten."""
    from tig.errors import UserError
    if not os.path.exists(path):
        return {"arch": arch, "kinds": {}}
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a results file of this command ({e.__class__.__name__}): refusing to "
                        "overwrite it; give another --out") from None
    if not isinstance(result, dict) or result.get("arch") != arch or not isinstance(result.get("kinds"), dict):
        raise UserError(f"{path} is not this command's results for --arch {arch}: refusing to overwrite it")
    return result


def write_outputs(out, result, md):
    from tig.files import atomic_write
    atomic_write(out, json.dumps(result, ensure_ascii=False, indent=1).encode("utf-8"))
    atomic_write(os.path.splitext(out)[0] + ".md", md.encode("utf-8"))


def report(result):
    """shortcuts.py's Markdown: per kind the methods' table, then the sanity checks'."""
    lines = [f"### {result['arch']}", ""]
    for kind, r in result["kinds"].items():
        rates = ", ".join(f"class {c}: {v['rate']:.2f}" for c, v in r["flip_rate"].items() if v["rate"] is not None)
        lines += [f"**{kind}** ({''.join(r['tokens'])}; test accuracy {r['test_accuracy']:.3f}; flip rate {rates}; "
                  f"{r['deciding']} deciding of {r['carrying']} carrying test texts)", "",
                  "| method | top-1 | MRR | P@k | s/text |", "|---|---|---|---|---|"]
        for spec, m in r["methods"].items():
            lines.append(f"| {spec} | refused: {m['refused']} | | | |" if "refused" in m else
                         f"| {spec} | {m['top1']:.3f} | {m['mrr']:.3f} | {m['p_at_k']:.3f} | {m['seconds_per_text']:.3f} |")
        lines.append("")
    if "sanity" in result:
        lines += [f"**sanity checks** ({result['sanity']['texts']} test texts of the single-token model; Spearman "
                  "with the trained model's scores after each cumulative randomisation stage)", "",
                  markdown(result["sanity"])]
    return "\n".join(lines) + "\n"
