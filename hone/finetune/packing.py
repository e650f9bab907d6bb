"""Packing: several short examples in one training row, so that a batch pads little.

Chat and instruction examples vary in length by orders of magnitude; padded to the longest
of a batch, most of a batch's tokens can be padding. Packed, each row holds examples one
after the other up to the context length, and the rows are batched as before. Each example
keeps what it would have seen alone: its positions restart at 0 (rotary angles and learned
position embeddings read them), and the models build from them an attention mask that never
crosses from one example into another (hone.models.gpt.document_mask). The loss is a mean
over the answer tokens of the batch, however they were packed.

Rows are arrays (3, L) of input ids, target ids and positions (hone.data.base.ExampleData).
"""

from __future__ import annotations

import bisect

import numpy as np


def pack_rows(rows: list[np.ndarray], context_length: int) -> list[np.ndarray]:
    """`rows` (each (3, L), L <= context_length) packed into as few rows of at most
    `context_length` tokens as best-fit decreasing finds: the longest example first, each
    into the fullest row that still has room for it. Deterministic: ties keep input order.

    Best-fit decreasing needs at most 11/9 of the optimal number of rows (Johnson 1973);
    for chat data, whose examples are mostly far shorter than the context, it comes close
    to every row full.
    """
    order = sorted(range(len(rows)), key=lambda i: -rows[i].shape[1])
    bins: list[list[int]] = []  # the examples of each packed row
    # (room left, bin) of every row that is not full, sorted: the fullest row that fits a
    # length is the first whose room is at least that length
    open_rows: list[tuple[int, int]] = []
    for i in order:
        length = rows[i].shape[1]
        assert length <= context_length, (length, context_length)
        at = bisect.bisect_left(open_rows, (length, -1))
        if at < len(open_rows):
            room, b = open_rows.pop(at)
        else:
            room, b = context_length, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - length > 0:
            bisect.insort(open_rows, (room - length, b))
    return [np.concatenate([rows[i] for i in members], axis=1) for members in bins]
