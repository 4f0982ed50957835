"""Partitioning of a tensor into per-rank segments (docs/arithmetic.md §1)."""
from __future__ import annotations


def partition(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """Split [0, n) into ``parts`` consecutive (start, stop) segments on ``align`` boundaries.

    The first ``units % parts`` segments get one unit of ``align`` elements more; trailing
    segments may be empty. Native code mirrors this function exactly.
    """
    if n < 0 or parts < 1 or align < 1:
        raise ValueError(f"partition needs n >= 0, parts >= 1, align >= 1 (got {n}, {parts}, {align})")
    units = -(-n // align)
    q, rem = divmod(units, parts)

    def edge(i: int) -> int:
        return min(n, align * (i * q + min(i, rem)))

    return [(edge(i), edge(i + 1)) for i in range(parts)]


def uncompressed_align(itemsize: int) -> int:
    """One 64-byte cache line, in elements."""
    return max(1, 64 // itemsize)
