"""text-integrated-gradients: explain Keras 3 text classifiers token by token.

    import tig
    ckpt = tig.load_checkpoint("checkpoints/reviews")
    ids = ckpt.tokenizer.encode(["质量太差了"], ckpt.maxlen)
    ig = tig.integrated_gradients(ckpt.model, ids, steps=50)    # an Attribution: scores [B, L], delta [B]

The public API is this module's `__all__`; each name is imported when first used, so that importing
`tig` (and every command's --help) stays fast and loads no TensorFlow until a method runs.
Where each name lives, and what each module does, is in the README's Layout table.
"""
import importlib

_WHERE = {
    # attribution methods: one batch of token ids (or strings) -> Attribution
    "integrated_gradients": "tig.ig", "quadrature": "tig.ig", "BASELINES": "tig.ig", "RULES": "tig.ig",
    "gradients": "tig.saliency",
    "occlusion": "tig.perturbation", "deletion_surrogate": "tig.perturbation", "deletion_ig": "tig.perturbation",
    "greedy_erasure": "tig.erasure",
    "attribute": "tig.methods", "explain_texts": "tig.methods", "METHODS": "tig.methods",
    "explain": "tig.explanations",
    "STEPS": "tig.defaults",
    # results
    "Attribution": "tig.attribution", "TextAttribution": "tig.methods", "class_scores": "tig.attribution",
    # models, data, tokenizers
    "load_checkpoint": "tig.checkpoint", "Checkpoint": "tig.checkpoint",
    "load_task": "tig.dataset", "TASKS": "tig.dataset",
    "Tokenizer": "tig.tokenizer", "build_model": "tig.model",
    "split_at_embedding": "tig.embedding_split",
    "UserError": "tig.errors",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tig' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
