"""Integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365) per token: the card's front.

For a model F split at its Embedding layer, input embeddings x [L,D], baseline x' and class t,
with the nodes a_k and weights w_k of a quadrature rule:

    IG_i = sum_d (x_id - x'_id) * integral_0^1 dF_t(x' + a (x - x')) / dx_id  da
         ~ sum_d (x_id - x'_id) * sum_k w_k * dF_t(x' + a_k (x - x')) / dx_id

and sum_i IG_i = F_t(x) - F_t(x') (completeness; the gap is reported as `delta`).
The code lives in the installable package: `tig.integrated_gradients` (tig/ig.py).
"""
from tig.ig import (BASELINES, DEFAULT_BASELINE, RULES, integrate, integrated_gradients,  # noqa: F401
                    make_baseline, quadrature)
