"""How greedy erasure's defaults were chosen: its settings side by side on the *validation* texts.

    python bench/choose_erasure.py --checkpoint runs/ckpt/hotel_cnn --data-dir DIR -n 100

Scores deletion IG, greedy erasure at each (share, candidates) setting and, when installed, LIME at
evaluate.py's default (2000 samples), with evaluate.py's metric (comprehensiveness AOPC, delete, bins 1/5/10/20/50%) on the first
n texts of the validation split, so the defaults in tig/erasure.py are never tuned on the test texts
that evaluate.py reports. Prints a Markdown table with each setting's seconds per text in this run.
"""
import sys

import time

SHARES = (0.1, 0.2, 0.5)      # greedy erasure settings compared (erasure.SHARE, erasure.CANDIDATES)
CANDIDATES = (5, 8)


def parse_args(argv=None):
    from tig.cli import ArgumentParser, int_range
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint folder")
    p.add_argument("--data-dir", default=None, help="Data directory (default: $TIG_DATA_DIR, then ./data).")
    p.add_argument("-n", type=int_range(1), default=100, help="validation texts scored")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tig.cli import quiet_tensorflow
    quiet_tensorflow()
    import numpy as np
    from tig.faithfulness import faithfulness
    from tig import peers
    from tig.checkpoint import load_checkpoint
    from tig.dataset import load_task
    from tig.erasure import greedy_erasure
    from tig.attribution import class_scores
    from tig.perturbation import deletion_ig
    ckpt = load_checkpoint(args.checkpoint)
    texts = load_task(ckpt.meta["task"], args.data_dir).val.texts[:args.n]
    token_ids = ckpt.tokenizer.encode(texts, ckpt.maxlen)

    def predict(ids):
        return class_scores(ckpt.model, ids, layer=ckpt.meta.get("layer"))
    target = predict(token_ids).argmax(-1)
    runs = [("deletion-ig", lambda: deletion_ig(ckpt.model, token_ids, target).scores)]
    runs += [(f"greedy-erasure share {s}, {c} candidates",
              lambda s=s, c=c: greedy_erasure(ckpt.model, token_ids, target, share=s, candidates=c).scores)
             for s in SHARES for c in CANDIDATES]
    if not peers.missing("lime"):     # evaluate.py's own LIME set-up and sample count
        runs.append((f"lime, {peers.LIME_SAMPLES} samples", lambda: peers.explain_peers(
            ckpt, texts, token_ids, target, ["lime"], lime_samples=peers.LIME_SAMPLES,
            shap_evals=peers.SHAP_EVALS)["lime"]["scores"]))
    else:
        print(peers.missing("lime") + " (its row is left out)", file=sys.stderr)
    print(f"### {ckpt.meta['task']}, {args.checkpoint}: first {len(texts)} validation texts\n")
    print("| method | comp. AOPC ↑ | bins 1/5/10/20/50% | s/text |\n|---|---|---|---|")
    for name, explain in runs:
        began = time.perf_counter()
        scores = np.asarray(explain(), np.float64)
        seconds = (time.perf_counter() - began) / len(texts)
        r = faithfulness(predict, token_ids, scores, target)
        bins = " / ".join(f"{v:.3f}" for v in r["comprehensiveness"].values())
        print(f"| {name} | {r['comprehensiveness_aopc']:.3f} | {bins} | {seconds:.3g} |", flush=True)


if __name__ == "__main__":
    from tig.cli import run
    run(main)
