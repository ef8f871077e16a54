"""RFC 29 hostlists: ordered lists of host names written as ``node[0-15],login1``.

A term is ``prefix[idlist]suffix`` or a plain name. Ranges keep their zero padding: the
width of a range is the length of its lower bound when that has a leading zero
(``n[008-010]`` is ``n008 n009 n010``). Duplicates and order are preserved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from .limits import MAX_HOSTNAME_LENGTH, MAX_HOSTS

_NAME_FORBIDDEN = re.compile(r"[\s,\[\]]")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?\Z")
_TRAILING_DIGITS = re.compile(r"^(.*?)([0-9]+)\Z", re.DOTALL)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    if "[" not in text and "]" not in text:
        return text.split(",")
    terms: list[str] = []
    depth = 0
    start = 0
    for pos, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"invalid hostlist {text!r}: nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"invalid hostlist {text!r}: unmatched ']'")
        elif char == "," and depth == 0:
            terms.append(text[start:pos])
            start = pos + 1
    if depth != 0:
        raise ValueError(f"invalid hostlist {text!r}: unmatched '['")
    terms.append(text[start:])
    return terms


def _check_name(name: str, source: str) -> None:
    if not name:
        raise ValueError(f"invalid hostlist {source!r}: empty host name")
    if len(name) > MAX_HOSTNAME_LENGTH:
        raise ValueError(
            f"invalid hostlist {source!r}: host name longer than {MAX_HOSTNAME_LENGTH}"
        )
    if _NAME_FORBIDDEN.search(name):
        raise ValueError(f"invalid hostlist {source!r}: bad host name {name!r}")


def _term_ranges(
    term: str, source: str, budget: int
) -> tuple[str, list[tuple[int, int, int]], str, int]:
    """Check one term and return its prefix, ranges, suffix and number of names, without
    expanding it; refuse when it would exceed ``budget`` names."""
    if "[" not in term:
        if "]" in term:
            raise ValueError(f"invalid hostlist {source!r}: unmatched ']' in {term!r}")
        _check_name(term, source)
        return term, [], "", 1
    open_pos = term.index("[")
    close_pos = term.find("]", open_pos)
    prefix, body, suffix = term[:open_pos], term[open_pos + 1 : close_pos], term[close_pos + 1 :]
    if "[" in suffix or "]" in suffix:
        raise ValueError(f"invalid hostlist {source!r}: more than one bracket in {term!r}")
    if body == "":
        raise ValueError(f"invalid hostlist {source!r}: empty brackets in {term!r}")
    ranges: list[tuple[int, int, int]] = []
    total = 0
    for item in body.split(","):
        match = _RANGE.match(item)
        if match is None:
            raise ValueError(f"invalid hostlist {source!r}: bad range {item!r} in {term!r}")
        lo_text, hi_text = match.group(1), match.group(2)
        lo = int(lo_text)
        hi = int(hi_text) if hi_text is not None else lo
        if hi < lo:
            raise ValueError(f"invalid hostlist {source!r}: range {item!r} is reversed")
        width = len(lo_text) if lo_text.startswith("0") and len(lo_text) > 1 else 0
        if hi_text is not None and width and len(hi_text) != width and hi_text.startswith("0"):
            raise ValueError(
                f"invalid hostlist {source!r}: range {item!r} has inconsistent zero padding"
            )
        total += hi - lo + 1
        if total > budget:
            raise ValueError(f"invalid hostlist {source!r}: more than {MAX_HOSTS} host names")
        ranges.append((lo, hi, width))
    # Only the shortest and the longest name can break the length limit.
    first_lo, _hi, first_width = ranges[0]
    _check_name(f"{prefix}{first_lo:0{first_width}d}{suffix}", source)
    longest = max(ranges, key=lambda r: len(f"{r[1]:0{r[2]}d}"))
    _check_name(f"{prefix}{longest[1]:0{longest[2]}d}{suffix}", source)
    return prefix, ranges, suffix, total


def _parse_term(term: str, source: str, budget: int) -> list[str]:
    """Expand one term; refuse before expanding when it would exceed ``budget`` names."""
    prefix, ranges, suffix, _count = _term_ranges(term, source, budget)
    if not ranges:
        return [prefix]
    names: list[str] = []
    for lo, hi, width in ranges:
        for number in range(lo, hi + 1):
            names.append(f"{prefix}{number:0{width}d}{suffix}")
    return names


def hostlist_size(text: str, budget: int = MAX_HOSTS) -> int:
    """How many names ``text`` expands to, checked as ``Hostlist(text)`` checks it but without
    expanding it: the cost of a hostlist can be judged before it is paid. ValueError past
    ``budget`` names."""
    if text == "":
        return 0
    total = 0
    for term in _split_terms(text):
        if term == "":
            raise ValueError(f"invalid hostlist {text!r}: empty term")
        total += _term_ranges(term, text, budget - total)[3]
    return total


def encode_hostnames(names: Sequence[str]) -> str:
    """The compressed hostlist text for already valid host names."""
    return _encode(names)


def _encode(names: Sequence[str]) -> str:
    """Compress adjacent names sharing a prefix into ``prefix[idlist]`` terms."""
    terms: list[str] = []
    group_prefix: str | None = None
    group_width = 0
    group_numbers: list[int] = []

    def flush() -> None:
        if group_prefix is None:
            return
        if len(group_numbers) == 1:
            terms.append(f"{group_prefix}{group_numbers[0]:0{group_width}d}")
            return
        parts: list[str] = []
        start = prev = group_numbers[0]
        for number in [*group_numbers[1:], None]:
            if number is not None and number == prev + 1:
                prev = number
                continue
            if start == prev:
                parts.append(f"{start:0{group_width}d}")
            else:
                parts.append(f"{start:0{group_width}d}-{prev:0{group_width}d}")
            if number is not None:
                start = prev = number
        terms.append(f"{group_prefix}[{','.join(parts)}]")

    for name in names:
        match = _TRAILING_DIGITS.match(name)
        if match is None:
            flush()
            group_prefix = None
            group_numbers = []
            terms.append(name)
            continue
        prefix, digits = match.group(1), match.group(2)
        number = int(digits)
        if (
            group_prefix == prefix
            and group_numbers
            and number > group_numbers[-1]
            and f"{number:0{group_width}d}" == digits
        ):
            group_numbers.append(number)
            continue
        flush()
        group_prefix = prefix
        group_width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        group_numbers = [number]
    flush()
    return ",".join(terms)


class Hostlist(Sequence[str]):
    """An immutable, ordered RFC 29 hostlist.

    ``Hostlist("node[0-3],login1")``, ``Hostlist(["a1", "a2"])``. ``str()`` gives the
    compressed form; indexing and iteration give the expanded names.
    """

    __slots__ = ("_names",)

    _names: tuple[str, ...]

    def __init__(self, hosts: str | Iterable[str] | Hostlist | None = None) -> None:
        if hosts is None:
            self._names = ()
        elif isinstance(hosts, Hostlist):
            self._names = hosts._names
        elif isinstance(hosts, str):
            self._names = tuple(self._parse(hosts))
        else:
            names: list[str] = []
            for entry in hosts:
                if not isinstance(entry, str):
                    raise TypeError(f"Hostlist: expected strings, got {entry!r}")
                names.extend(self._parse(entry, MAX_HOSTS - len(names)))
            self._names = tuple(names)

    @staticmethod
    def _parse(text: str, budget: int = MAX_HOSTS) -> list[str]:
        if text == "":
            return []
        names: list[str] = []
        for term in _split_terms(text):
            if term == "":
                raise ValueError(f"invalid hostlist {text!r}: empty term")
            names.extend(_parse_term(term, text, budget - len(names)))
        return names

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Hostlist: ...

    def __getitem__(self, index: int | slice) -> str | Hostlist:
        if isinstance(index, slice):
            new = Hostlist.__new__(Hostlist)
            new._names = self._names[index]
            return new
        return self._names[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def encode(self) -> str:
        return _encode(self._names)

    def expand(self) -> list[str]:
        return list(self._names)

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"Hostlist({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hostlist):
            return self._names == other._names
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names)
