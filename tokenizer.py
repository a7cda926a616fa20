"""The tokenizer: the card's front.

Characters (or jieba words) -> int32 ids, PAD=0, UNK=1, MASK=2; one tokenizer serves training,
explanation and evaluation, so a score always lines up with the token a reader sees.
The code lives in the installable package: `tig.Tokenizer` (tig/tokenizer.py).
"""
from tig.tokenizer import MASK_ID, PAD_ID, UNK_ID, Tokenizer, clean_text  # noqa: F401
