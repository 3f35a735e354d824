"""Length-sorted packing of chunks into batches bounded by a token budget (pure; no torch).

The cost of a padded batch is `items * longest_item` input tokens, so chunks are sorted by length and
packed longest first: batch mates have similar lengths and little padding is wasted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# CPU: batching is slower there (padding waste, no parallel lanes to fill), so only short chunks share
# a batch. In input tokens (a 400-character chunk is ~800 tokens with blanks interleaved).
CPU_TOKEN_BUDGET = 1024
MIN_TOKEN_BUDGET = 256
MAX_TOKEN_BUDGET = 1 << 17
# Share of the free device memory that batches may fill; the rest covers the allocator's fragmentation
# and the measurement's error.
FREE_MEMORY_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Item:
    """One chunk to batch: its position in the caller's list and its length in input tokens."""

    key: int
    n_tokens: int


def padded_tokens(items: Sequence[Item]) -> int:
    """Input tokens a batch occupies once padded to its longest item."""
    return len(items) * max((item.n_tokens for item in items), default=0)


def plan_batches(items: Sequence[Item], token_budget: int, max_items: int | None = None) -> list[list[Item]]:
    """Pack `items` into batches whose padded size stays within `token_budget` input tokens.

    Items are sorted longest first (ties keep input order). An item longer than the budget alone gets a
    batch of its own (the OOM back-off decides whether it fits). `max_items` caps items per batch.
    Raises ValueError for a budget or cap below 1.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    ordered = sorted(items, key=lambda item: -item.n_tokens)
    batches: list[list[Item]] = []
    current: list[Item] = []
    for item in ordered:
        # Sorted longest first, so current[0] stays the longest and sets the padded width.
        width = current[0].n_tokens if current else item.n_tokens
        full = max_items is not None and len(current) >= max_items
        if current and (full or (len(current) + 1) * width > token_budget):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def lowered_budget(batch: Sequence[Item], token_budget: int) -> int:
    """Token budget after `batch` (two items or more) ran out of memory: about half its padded tokens,
    never below its longest item (one chunk must still plan alone) nor above `token_budget`."""
    longest = max((item.n_tokens for item in batch), default=1)
    return max(1, min(token_budget, max(padded_tokens(batch) // 2, longest)))


def budget_from_memory(free_bytes: int, bytes_per_token: float, share: float = FREE_MEMORY_SHARE) -> int:
    """Token budget that fills `share` of `free_bytes` at `bytes_per_token` (measured for the model on
    this device), clamped to [MIN_TOKEN_BUDGET, MAX_TOKEN_BUDGET]."""
    if bytes_per_token <= 0:
        return MAX_TOKEN_BUDGET
    budget = int(free_bytes * share / bytes_per_token)
    return max(MIN_TOKEN_BUDGET, min(MAX_TOKEN_BUDGET, budget))
