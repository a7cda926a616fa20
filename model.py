"""The classifier architectures: the card's front.

Every model is two named sub-models, so any architecture can be explained:

    embedder: token_ids [B, L] -> (embeddings [B, L, D], mask [B, L])
    head:     (embeddings, mask) -> class probabilities [B, C]
    model(token_ids) == head(*embedder(token_ids))

Architectures: cnn, textcnn, bilstm, mean, fasttext, transformer. The code lives in the installable
package: `tig.build_model` (tig/model.py).
"""
from tig.defaults import ARCHS  # noqa: F401
from tig.model import build_model, make_optimizer  # noqa: F401
