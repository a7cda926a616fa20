"""Rows of token ids: which positions an explanation scores, the side a model pads on, and deletion.

Every method and every metric that deletes tokens (occlusion, the deletion surrogate, deletion IG, greedy
erasure, evaluate.py's faithfulness) deletes through `delete_tokens`, so that a deleted text is the text
the model would have seen had those characters never been typed: the remaining tokens keep their order
and PAD fills the row on the model's own padding side,

    post:  [5 6 7 0 0 0] minus 6  ->  [5 7 0 0 0 0]
    pre:   [0 0 0 5 6 7] minus 6  ->  [0 0 0 0 5 7]     (keras' pad_sequences default; --padding pre)

Explained positions are the tokens that are not `fixed` (PAD, and a KerasHub tokenizer's [CLS], [SEP]:
the split's fixed_ids); fixed tokens are never deleted, scored or ranked, and keep their order among
the others.
"""
import numpy as np

from tig.errors import UserError
from tig.tokenizer import PAD_ID

PADDINGS = ("post", "pre")


def explained_mask(token_ids, fixed_ids=(PAD_ID,)):
    """[B, L] (or [L]) bool: True where a token gets a score (not PAD, not a fixed special token)."""
    return ~np.isin(np.asarray(token_ids), np.asarray(fixed_ids))


def explained_positions(token_ids, fixed_ids=(PAD_ID,)):
    """Per row of [B, L] token ids, the indices of its explained tokens; their count is the row's real length
    (0 for an empty row)."""
    return [np.flatnonzero(row) for row in explained_mask(np.atleast_2d(token_ids), fixed_ids)]


def padding_side(token_ids, padding=None):
    """The side the rows are padded on: `padding` when given ("post" or "pre"); else read off the rows:
    "pre" when some row starts with PAD and ends with a token, "post" otherwise; rows padded on both
    sides are refused (a full row reads as either: give padding= for a pre-padded model)."""
    if padding is not None:
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        return padding
    rows = np.atleast_2d(np.asarray(token_ids))
    if rows.shape[1] == 0:
        return "post"
    pre = (rows[:, 0] == PAD_ID) & (rows[:, -1] != PAD_ID)
    post = (rows[:, 0] != PAD_ID) & (rows[:, -1] == PAD_ID)
    if pre.any() and post.any():
        raise UserError("these token-id rows are padded on both sides; encode them one way, or give padding='pre' "
                        "or 'post'")
    return "pre" if pre.any() else "post"


def delete_tokens(row, keep, positions=None, padding="post"):
    """Copies of one row with tokens deleted, PAD on the `padding` side.

    row: [L] token ids; positions: [n] the explained positions (default: every non-PAD position);
    keep: [K, n] bool, False where that position's token is deleted in copy k. Tokens at other non-PAD
    positions (fixed specials) always stay. Returns (rows [K, L] int32, moved [K, n] int: where each
    explained token sits in copy k, -1 where it was deleted)."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    row = np.asarray(row)
    length = len(row)
    if positions is None:
        positions = np.flatnonzero(row != PAD_ID)
    positions = np.asarray(positions, int)
    keep = np.asarray(keep, bool).reshape(-1, len(positions))
    stays = np.tile(row != PAD_ID, (len(keep), 1))
    stays[:, positions] = keep
    counts = stays.sum(1)
    order = np.argsort(~stays, axis=1, kind="stable")             # staying positions first, in order
    first = np.zeros(len(keep), int) if padding == "post" else length - counts
    slot = np.arange(length)[None, :]
    rows = np.full((len(keep), length), PAD_ID, np.int32)
    taken = slot < counts[:, None]                                   # the first `counts` of `order`
    placed = (slot >= first[:, None]) & (slot < (first + counts)[:, None])
    rows[placed] = row[order[taken]]
    rank = np.cumsum(stays, axis=1) - 1                              # index among the staying tokens
    moved = np.where(keep, first[:, None] + rank[:, positions], -1)
    return rows, moved
