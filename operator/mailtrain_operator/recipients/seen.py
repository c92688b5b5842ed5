"""The addresses a list has given so far, in about 16 bytes each: deduplication of a million rows.

A Python set of a million addresses costs some 150 MB, and even a set of their 64-bit digests
78 MB (an int object and a hash-table slot each). Here the digests live in 256 open-addressing
tables of unboxed 64-bit integers (`array('Q')`), one per value of the digest's top byte: at most
three quarters full, so between 10.7 and 21 bytes per address, 16 MB for a million. Each table
grows on its own, so a growth copies 1/256 of the whole and never holds the event loop for long.

A digest stands for its address: two different addresses with the same 64-bit BLAKE2b digest
would count as one. For a million addresses the chance of any such pair is about 3 in 100
million; BLAKE2b (unkeyed) makes the outcome the same on every run, so a list read twice gives
the same recipients.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b

_SEGMENT_BITS = 8
_FIRST_SIZE = 64  # slots per table at the start: 256 x 64 x 8 bytes = 128 KiB for an empty set


def digest(key: str) -> int:
    """The 64-bit digest a key is remembered by; never 0 (0 marks an empty slot)."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little") or 1


class SeenAddresses:
    """A set of keys (normalized addresses) that stores their 64-bit digests only."""

    def __init__(self) -> None:
        self._tables = [array("Q", bytes(8 * _FIRST_SIZE)) for _ in range(1 << _SEGMENT_BITS)]
        self._counts = [0] * (1 << _SEGMENT_BITS)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory the tables take (the Python objects around them add a few KiB)."""
        return sum(len(table) * table.itemsize for table in self._tables)

    def add(self, key: str) -> bool:
        """Remember `key`; True if it is new, False if it was seen before."""
        # digest(key), inlined: this runs once per row of the list
        value = int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        segment = value >> (64 - _SEGMENT_BITS)
        table = self._tables[segment]
        mask = len(table) - 1
        slot = value & mask  # the low bits: independent of the top byte that chose the table
        while found := table[slot]:
            if found == value:
                return False
            slot = (slot + 1) & mask
        table[slot] = value
        self._size += 1
        count = self._counts[segment] = self._counts[segment] + 1
        if 4 * count > 3 * len(table):
            self._tables[segment] = _grown(table)
        return True


def _grown(table: array[int]) -> array[int]:
    """The same digests in a table twice as large."""
    bigger = array("Q", bytes(16 * len(table)))
    mask = len(bigger) - 1
    for value in table:
        if value:
            slot = value & mask
            while bigger[slot]:
                slot = (slot + 1) & mask
            bigger[slot] = value
    return bigger
