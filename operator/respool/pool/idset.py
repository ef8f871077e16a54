"""RFC 22 idsets: sets of non-negative integer IDs written as ``0-3,7``.

An ``IDset`` is immutable and stores sorted, disjoint, non-adjacent closed intervals, so
``0-4294967294`` costs two integers, not four billion. Expanding it (iterating, building a
bitmask) is the caller's decision; the pool checks sizes against ``limits`` first.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator

from .limits import MAX_ID

_NUMBER = r"(?:0|[1-9][0-9]*)"
_ITEM = re.compile(rf"({_NUMBER})(?:-({_NUMBER}))?\Z")
_ONES = re.compile("1+")

Interval = tuple[int, int]


def _normalize(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sort and merge overlapping or adjacent intervals."""
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


class IDset:
    """An immutable RFC 22 idset.

    ``IDset("0-3,7")``, ``IDset("[0-3]")``, ``IDset([0, 1, 2])``, ``IDset(5)``, ``IDset()``.
    Parsing accepts items in any order (they are normalized); anything else that is not
    RFC 22 — a reversed range ``3-1``, a negative ``-1``, a letter, a leading zero ``01``,
    whitespace, an empty item — raises ``ValueError`` naming the offending item.
    """

    __slots__ = ("_count", "_hash", "_intervals")

    _intervals: tuple[Interval, ...]
    _count: int
    _hash: int | None

    def __init__(self, ids: str | int | Iterable[int] | IDset | None = None) -> None:
        if ids is None:
            intervals: tuple[Interval, ...] = ()
        elif isinstance(ids, IDset):
            intervals = ids._intervals
        elif isinstance(ids, str):
            intervals = self._parse(ids)
        elif isinstance(ids, bool):
            raise TypeError("IDset: expected an idset string, an int or ints, not bool")
        elif isinstance(ids, int):
            self._check_id(ids)
            intervals = ((ids, ids),)
        else:
            values = list(ids)
            for item in values:
                if isinstance(item, bool) or not isinstance(item, int):
                    raise TypeError(f"IDset: expected int IDs, got {item!r}")
            if values:
                values.sort()
                self._check_id(values[0])
                self._check_id(values[-1])
            runs: list[Interval] = []
            start = prev = -2
            for item in values:
                if item > prev + 1:
                    if prev >= 0:
                        runs.append((start, prev))
                    start = item
                prev = max(prev, item)
            if values:
                runs.append((start, prev))
            intervals = tuple(runs)
        self._set_intervals(intervals)

    def _set_intervals(self, intervals: tuple[Interval, ...]) -> None:
        self._intervals = intervals
        self._count = sum(hi - lo + 1 for lo, hi in intervals)
        self._hash = None

    @classmethod
    def _from_intervals(cls, intervals: tuple[Interval, ...]) -> IDset:
        new = cls.__new__(cls)
        new._set_intervals(intervals)
        return new

    @classmethod
    def from_mask(cls, mask: int) -> IDset:
        """The IDs of the set bits of ``mask`` (bit i set: ID i present)."""
        if mask < 0:
            raise ValueError("IDset.from_mask: negative mask")
        if mask.bit_count() <= 8:
            intervals: list[Interval] = []
            while mask:
                low = mask & -mask
                mask ^= low
                bit = low.bit_length() - 1
                if intervals and intervals[-1][1] == bit - 1:
                    intervals[-1] = (intervals[-1][0], bit)
                else:
                    intervals.append((bit, bit))
            return cls._from_intervals(tuple(intervals))
        # linear in the mask's length, however fragmented: scan the binary text for runs
        bits = format(mask, "b")[::-1]
        return cls._from_intervals(
            tuple((run.start(), run.end() - 1) for run in _ONES.finditer(bits))
        )

    @staticmethod
    def _check_id(value: int) -> None:
        if value < 0:
            raise ValueError(f"idset: negative ID {value}")
        if value > MAX_ID:
            raise ValueError(f"idset: ID {value} exceeds the maximum {MAX_ID}")

    @classmethod
    def _parse(cls, text: str) -> tuple[Interval, ...]:
        body = text
        if body.startswith("[") and body.endswith("]"):
            body = body[1:-1]
        if body == "":
            return ()
        items: list[Interval] = []
        for item in body.split(","):
            match = _ITEM.match(item)
            if match is None:
                raise ValueError(f"invalid idset {text!r}: bad item {item!r}")
            lo = int(match.group(1))
            hi = int(match.group(2)) if match.group(2) is not None else lo
            if hi < lo:
                raise ValueError(f"invalid idset {text!r}: range {item!r} is reversed")
            if hi > MAX_ID:
                raise ValueError(
                    f"invalid idset {text!r}: ID {hi} in {item!r} exceeds the maximum {MAX_ID}"
                )
            items.append((lo, hi))
        return _normalize(items)

    # -- queries ---------------------------------------------------------------------

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """Sorted disjoint closed intervals ``(lo, hi)``."""
        return self._intervals

    def __len__(self) -> int:
        return self._count

    def count(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self._intervals:
            yield from range(lo, hi + 1)

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        pos = bisect_right(self._intervals, (value, MAX_ID + 1)) - 1
        return pos >= 0 and self._intervals[pos][0] <= value <= self._intervals[pos][1]

    def first(self) -> int:
        if not self._intervals:
            raise ValueError("first() of an empty idset")
        return self._intervals[0][0]

    def last(self) -> int:
        if not self._intervals:
            raise ValueError("last() of an empty idset")
        return self._intervals[-1][1]

    def to_mask(self, limit: int) -> int:
        """The set as a bitmask; ``ValueError`` if an ID exceeds ``limit``."""
        if self._intervals and self._intervals[-1][1] > limit:
            raise ValueError(f"ID {self._intervals[-1][1]} exceeds the maximum {limit}")
        mask = 0
        for lo, hi in self._intervals:
            mask |= ((1 << (hi - lo + 1)) - 1) << lo
        return mask

    # -- set algebra -----------------------------------------------------------------

    def __or__(self, other: IDset) -> IDset:
        return IDset._from_intervals(_normalize(self._intervals + other._intervals))

    union = __or__

    @classmethod
    def union_of(cls, sets: Iterable[IDset | str]) -> IDset:
        """The union of many idsets (or their RFC 22 texts) in one pass: O(k log k) in their
        k intervals, where folding ``|`` over n sets costs O(n k)."""
        intervals: list[Interval] = []
        for item in sets:
            intervals.extend(item._intervals if isinstance(item, IDset) else cls._parse(item))
        return cls._from_intervals(_normalize(intervals))

    def __and__(self, other: IDset) -> IDset:
        result: list[Interval] = []
        a, b = self._intervals, other._intervals
        i = j = 0
        while i < len(a) and j < len(b):
            lo = max(a[i][0], b[j][0])
            hi = min(a[i][1], b[j][1])
            if lo <= hi:
                result.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return IDset._from_intervals(tuple(result))

    intersect = __and__

    def __sub__(self, other: IDset) -> IDset:
        result: list[Interval] = []
        b = other._intervals
        j = 0
        for lo, hi in self._intervals:
            cur = lo
            while j < len(b) and b[j][1] < cur:
                j += 1
            k = j
            while k < len(b) and b[k][0] <= hi:
                if b[k][0] > cur:
                    result.append((cur, b[k][0] - 1))
                cur = max(cur, b[k][1] + 1)
                k += 1
            if cur <= hi:
                result.append((cur, hi))
        return IDset._from_intervals(tuple(result))

    difference = __sub__

    def issubset(self, other: IDset) -> bool:
        return not (self - other)

    # -- encoding --------------------------------------------------------------------

    def encode(self, brackets: bool = False) -> str:
        """RFC 22 text; pairs are written as ranges (``0-1``) like Flux's C encoder.

        With ``brackets=True`` a set of more than one ID is wrapped in ``[...]``.
        """
        text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self._intervals)
        if brackets and self._count > 1:
            return f"[{text}]"
        return text

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"IDset({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IDset):
            return self._intervals == other._intervals
        if isinstance(other, str):
            try:
                return self._intervals == IDset._parse(other)
            except ValueError:
                return False
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._intervals)
        return self._hash
