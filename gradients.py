"""Vanilla gradients per token: the card's front.

For a model F split at its Embedding layer, x = the Embedding layer's output [B,L,D] and class t:

    saliency:          score_i = || dF_t/dx_i ||_2             (unsigned)
    gradient x input:  score_i = sum_d x_id * dF_t/dx_id        (signed)

The code lives in the installable package: `tig.gradients` (tig/saliency.py).
"""
from tig.saliency import gradients  # noqa: F401
