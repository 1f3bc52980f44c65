"""One batched KV cache for a beam: rows reordered by index, keys written in place.

HF's DynamicCache concatenates every layer's keys and values with the new token at each step
(a copy of the whole cache), and a beam search that hands each hypothesis a slice of it keeps
every step's batched cache alive as long as any hypothesis (an ended one, say) holds a slice.
`BeamCache` instead keeps one buffer per layer with room to grow (new tokens are written in
place; the buffer is reallocated only every so many tokens) and follows the beam by
reordering its rows (`select_rows`, skipped when the order is unchanged), so its memory is the
live beam's cache and nothing else.

`CacheRow` is the small per-hypothesis state that ESPnet's beam search passes around: a row
of one `BeamCache` at one step (generation). The cache moves on at every scoring step, so
a row is only valid until then; `BeamCache.rows_of` rejects stale rows with a clear error.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Capacity grows by this fraction of the needed length (at least _MIN_GROWTH tokens), so a
# decode of L tokens reallocates O(log L) times and wastes at most a quarter of the memory.
_GROWTH = 0.25
_MIN_GROWTH = 64


class BufferLayer(DynamicLayer):
    """One layer's keys and values [batch, heads, capacity, head_dim], the first `length` valid.

    `keys` and `values` are views of the valid part (unit stride along head_dim, which the
    attention kernels need; the head stride spans the capacity). HF's own reorder, select,
    repeat and crop hooks are overridden so that none of them leaves the buffers behind.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.length = 0
        self._key_buffer = self._value_buffer = None
        self.keys = self.values = None
        self.is_initialized = True

    def _reserve(self, needed: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if self._key_buffer is not None and self._key_buffer.shape[2] >= needed:
            return
        capacity = needed + max(_MIN_GROWTH, int(needed * _GROWTH))
        buffers = []
        for old, new in ((self._key_buffer, key_states), (self._value_buffer, value_states)):
            batch, heads, _, dim = new.shape
            buffer = new.new_empty(batch, heads, capacity, dim)
            if old is not None:
                buffer[:, :, : self.length] = old[:, :, : self.length]
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, stop = self.length, self.length + key_states.shape[2]
        self._reserve(stop, key_states, value_states)
        self._key_buffer[:, :, start:stop] = key_states
        self._value_buffer[:, :, start:stop] = value_states
        self.length = stop
        self.keys, self.values = self._key_buffer[:, :, :stop], self._value_buffer[:, :, :stop]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep rows `index` (repeats allowed) of the batch, in that order (one copy of each buffer)."""
        if not self.is_initialized or self._key_buffer is None:
            return
        self._key_buffer = self._key_buffer.index_select(0, index)
        self._value_buffer = self._value_buffer.index_select(0, index)
        self.keys, self.values = self._key_buffer[:, :, : self.length], self._value_buffer[:, :, : self.length]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.select_rows(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.select_rows(torch.as_tensor(indices, device=self.device).flatten())

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._key_buffer is not None:
            rows = torch.arange(self._key_buffer.shape[0], device=self.device).repeat_interleave(repeats)
            self.select_rows(rows)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("BeamCache does not crop")


class BeamCache(Cache):
    """A HF `Cache` of `BufferLayer`s for the rows of a beam (or of a batch of beams)."""

    def __init__(self):
        super().__init__(layer_class_to_replicate=BufferLayer)
        self.generation = 0

    @property
    def rows(self) -> int:
        """Rows (hypotheses) in the batch; 0 before the first forward."""
        first = self.layers[0] if self.layers else None
        return 0 if first is None or getattr(first, "_key_buffer", None) is None else first._key_buffer.shape[0]

    def select_rows(self, index: Sequence[int] | torch.Tensor) -> None:
        """Reorder the batch to rows `index` (repeats allowed); nothing is copied for the identity."""
        if len(index) == self.rows:
            if torch.is_tensor(index):
                identity = bool((index == torch.arange(len(index), device=index.device)).all())
            else:
                identity = list(index) == list(range(len(index)))
            if identity:
                return
        index = torch.as_tensor(index, dtype=torch.long)
        for layer in self.layers:
            layer.select_rows(index.to(layer.device) if layer.is_initialized else index)

    def advance(self, rows: int) -> List["CacheRow"]:
        """Mark a scoring step done: fresh states for the `rows` rows now in the cache."""
        self.generation += 1
        return [CacheRow(self, self.generation, row) for row in range(rows)]

    def rows_of(self, states: Sequence["CacheRow"]) -> List[int]:
        """The row of each state, after checking that all belong to this cache's current step."""
        for state in states:
            if state.cache is not self or state.generation != self.generation:
                raise RuntimeError(
                    "stale KV-cache state: a hypothesis state is valid only until the next batch_score "
                    "of its beam (every hypothesis scored must come from the last batch_score, as "
                    "ESPnet's BatchBeamSearch does)"
                )
        return [state.row for state in states]

    def copy_rows(self, index: Sequence[int]) -> "BeamCache":
        """A new cache holding copies of rows `index` (this one is left as it is)."""
        copy = BeamCache()
        for layer in self.layers:
            new = BufferLayer()
            if layer.is_initialized and layer.length:
                rows = torch.tensor(list(index), device=layer.device)
                new.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows))
            copy.layers.append(new)
        return copy


class CacheRow:
    """A hypothesis' decoder state: row `row` of `cache` as it was after step `generation`."""

    __slots__ = ("cache", "generation", "row")

    def __init__(self, cache: BeamCache, generation: int, row: int):
        self.cache, self.generation, self.row = cache, generation, row

    def __repr__(self) -> str:
        return f"CacheRow(row={self.row}, generation={self.generation})"
