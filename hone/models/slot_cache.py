"""Keys and values of many sequences decoded together: a fixed number of slots, each holding
one sequence of up to `max_length` tokens, each at its own length.

A server's scheduler (hone.serve.scheduler) gives a sequence a slot, feeds its prompt in
chunks, then feeds every running sequence's last token in one batched forward. The model
code knows nothing of requests: `GPT.forward(idx, cache)` and `Llama.forward(idx, cache)`
ask the cache where idx's tokens sit (`placement`: each row's positions, and which cached
keys each query may see), store the new keys and values (`update`) and `advance`. That is
the interface of hone.models.gpt.KVCache, whose placement is the implicit one (contiguous
positions after `length`, the causal mask).

Shapes: R rows of this forward (a subset of the slots), T new tokens per row, G key/value
heads, D head width, S keys each row attends to (padded to the longest row; masked beyond
its own length).
"""

from __future__ import annotations

import torch


class SlotCache:
    """`num_slots` sequences of up to `max_length` tokens. Per layer, keys and values are
    (num_slots, G, max_length, D), allocated at the layer's first write in the dtype it
    computes in and zeroed (a masked key still enters the sums with weight 0: it must not be
    NaN). Before each forward, `select(rows, num_tokens)` names the slots idx's rows belong
    to; `key_length` fixes S (the batch-invariant mode runs every step at one shape)."""

    def __init__(self, num_layers: int, num_slots: int, max_length: int) -> None:
        self.num_slots, self.max_length = num_slots, max_length
        self.lengths = [0] * num_slots  # tokens each slot holds
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        # The position of the forward's first token when every row starts there and the keys
        # are not padded: the model then runs as with a KVCache (no positions, no mask), the
        # same arithmetic as a lone generation's; otherwise 0, and `placement` has them all.
        self.length = 0
        self.rows: list[int] = []
        self.num_tokens = 0
        self.key_length = 0
        self._positions: torch.Tensor | None = None  # (R, T)
        self._mask: torch.Tensor | None = None  # (R, 1, T, S)
        self._index: torch.Tensor | slice = slice(0)
        self._slots = torch.zeros(0, 1, dtype=torch.long)  # (R, 1)

    def select(
        self, rows: list[int], num_tokens: int, device: torch.device, key_length: int = 0
    ) -> None:
        """The next forward runs `num_tokens` new tokens for each slot of `rows`, after the
        tokens each holds; its keys are padded to `key_length` (0: the longest row's), and
        then always masked."""
        starts = [self.lengths[r] for r in rows]
        end = max(starts) + num_tokens
        assert end <= self.max_length, f"slot of {self.max_length} tokens cannot hold {end}"
        S = key_length or end
        assert end <= S <= self.max_length, (end, S)
        self.rows, self.num_tokens, self.key_length = rows, num_tokens, S
        uniform = not key_length and all(start == starts[0] for start in starts)
        self.length = starts[0] if uniform else 0
        self._positions = self._mask = None
        # Consecutive slots are a view; any others are gathered.
        consecutive = rows == list(range(rows[0], rows[0] + len(rows)))
        self._index = slice(rows[0], rows[0] + len(rows)) if consecutive else slice(0)
        if uniform and consecutive:
            return
        self._slots = torch.tensor(rows, device=device)[:, None]  # (R, 1)
        if not consecutive:
            self._index = self._slots[:, 0]
        start = torch.tensor(starts, device=device)[:, None]  # (R, 1)
        self._positions = start + torch.arange(num_tokens, device=device)  # (R, T)
        if not uniform:
            # Query at position p sees the keys at positions <= p of its own slot.
            keys = torch.arange(S, device=device)
            self._mask = (keys[None, None, :] <= self._positions[:, :, None])[:, None]

    def placement(self, num_tokens: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Positions (R, T) of the new tokens and the mask (R, 1, T, S) of keys each may see;
        None, None when every row starts at `length` (the model's own causal rule holds)."""
        assert num_tokens == self.num_tokens, "select() the rows before each forward"
        if self._mask is None:
            return None, None
        return self._positions, self._mask

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' k and v (R, G, T, D) at each row's positions; returns the
        rows' keys and values (R, G, S, D)."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            _, G, _, D = k.shape
            keys = self.keys[layer] = k.new_zeros(self.num_slots, G, self.max_length, D)
            values = self.values[layer] = v.new_zeros(
                self.num_slots, G, self.max_length, v.size(-1)
            )
        if self._positions is None:  # consecutive rows, all at `length`
            keys[self._index, :, self.length : self.length + k.size(-2)] = k
            values[self._index, :, self.length : self.length + v.size(-2)] = v
        else:  # advanced indices around a slice put their dims first: (R, T, G, D)
            keys[self._slots, :, self._positions] = k.transpose(1, 2)
            values[self._slots, :, self._positions] = v.transpose(1, 2)
        S = self.key_length
        return keys[self._index, :, :S], values[self._index, :, :S]

    def advance(self, num_tokens: int) -> None:
        for r in self.rows:
            self.lengths[r] += num_tokens

    def bytes_per_token(self) -> int:
        """Memory one cached token takes across layers (after a first forward)."""
        return sum(
            t[0, :, 0].numel() * t.element_size() for t in self.keys + self.values if t is not None
        )
