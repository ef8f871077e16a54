"""The terminal timeline of `respool describe pool` (pure rendering)."""

from __future__ import annotations

import pytest

from respool.client.timeline import (
    Booking,
    Maintenance,
    encode_ranks,
    render_timeline,
    span_text,
)

NOW = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC
HOUR = 3600.0


def grid(lines: list[str]) -> dict[str, str]:
    """Row label -> cells, for the rank rows of a rendered timeline."""
    rows = {}
    for line in lines[1:]:
        if not line or line.startswith(" "):
            break
        label, cells = line.split()
        rows[label] = cells
    return rows


def test_free_pool_is_all_dots_and_grouped() -> None:
    lines = render_timeline(range(8), [], now=NOW, hours=4, width=16, utc=True)
    assert grid(lines) == {"0-7": "." * 16}
    assert lines[-1] == "No active or scheduled reservations."


def test_active_booking_until_its_end_then_free() -> None:
    held = Booking("team-a/nightly", frozenset({0, 1}), NOW - 600, NOW + 2 * HOUR, nodes="node[0-1]")
    lines = render_timeline(range(4), [held], now=NOW, hours=4, width=16, utc=True)
    assert grid(lines) == {"0-1": "A" * 8 + "." * 8, "2-3": "." * 16}
    legend = [line for line in lines if line.startswith("A  ")]
    assert legend == ["A  team-a/nightly  exclusive  Active  until 13:06  ends in 2h00m  node[0-1]"]


def test_scheduled_booking_starts_later_and_is_listed_with_its_start() -> None:
    later = Booking("team-b/ci", frozenset({2}), NOW + HOUR, NOW + 2 * HOUR, phase="Scheduled")
    lines = render_timeline(range(3), [later], now=NOW, hours=4, width=16, utc=True)
    assert grid(lines)["2"] == "." * 4 + "A" * 4 + "." * 8
    assert any("Scheduled  12:06-13:06  starts in 1h00m" in line for line in lines)


def test_shared_overlap_down_ranks_and_open_end() -> None:
    one = Booking("a/s1", frozenset({0}), NOW, NOW + HOUR, mode="shared")
    two = Booking("a/s2", frozenset({0}), NOW, NOW + 2 * HOUR, mode="shared")
    forever = Booking("b/x", frozenset({1}), NOW, None)
    lines = render_timeline(range(3), [one, two, forever], now=NOW, hours=4, width=8, down=frozenset({2}), utc=True)
    rows = grid(lines)
    assert rows["0"] == "++BB...."
    assert rows["1"] == "C" * 8
    assert rows["2"] == "x" * 8
    assert any("open-ended" in line for line in lines)


def test_a_handover_inside_one_column_is_not_shown_as_sharing() -> None:
    first = Booking("a/first", frozenset({0}), NOW - 60, NOW + 0.8 * HOUR)
    second = Booking("a/second", frozenset({0}), NOW + 0.8 * HOUR, NOW + 2 * HOUR)
    rows = grid(render_timeline(range(1), [first, second], now=NOW, hours=4, width=8, utc=True))
    # column 1 covers [30m, 60m): first holds 18 minutes of it, second 12
    assert rows["0"] == "AABB...."


def test_axis_marks_the_hours_at_their_columns() -> None:
    lines = render_timeline(range(1), [], now=NOW, hours=4, width=24, utc=True)
    header = lines[0]
    cells_start = lines[1].index(".")
    # 11:06:40 + 53m20s = 12:00 -> column 5.33 -> column 5 (10-minute columns)
    assert header.index("12:00") == cells_start + 5
    assert header.index("13:00") == cells_start + 11


def test_custom_rank_names_and_symbols_beyond_the_alphabet() -> None:
    bookings = [Booking(f"ns/r{i:02d}", frozenset({i}), NOW, NOW + HOUR) for i in range(70)]
    lines = render_timeline(
        range(70), bookings, now=NOW, hours=1, width=8, utc=True, name_ranks=lambda r: f"n{r[0]}"
    )
    rows = grid(lines)
    assert rows["n0"] == "A" * 8 and rows["n61"] == "9" * 8
    # ranks 62-69 all show '#', so they are grouped into one row named after its first rank
    assert rows["n62"] == "#" * 8 and "n63" not in rows


@pytest.mark.parametrize(("hours", "width"), [(0, 10), (-1, 10), (1, 3)])
def test_bad_geometry_is_rejected(hours: float, width: int) -> None:
    with pytest.raises(ValueError, match="timeline needs"):
        render_timeline(range(2), [], now=NOW, hours=hours, width=width)


def test_helpers() -> None:
    assert encode_ranks([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert encode_ranks([]) == ""
    assert [span_text(s) for s in (5, 600, 7500, 200_000, -3)] == ["5s", "10m", "2h05m", "2d7h", "0s"]


def test_maintenance_windows_are_drawn_over_everything_and_listed() -> None:
    now = 1_900_000_000.0 - (1_900_000_000.0 % 3600)
    held = Booking("team/a", frozenset({0, 1}), now, now + 4 * 3600)
    window = Maintenance("firmware", frozenset({1}), now + 3600, now + 2 * 3600, "Evict",
                         "BIOS")
    lines = render_timeline([0, 1], [held], now=now, hours=4, width=8, utc=True,
                            maintenance=[window])
    assert lines[1].endswith("AAAAAAAA") and lines[2].endswith("AA!!AAAA")
    assert "! maintenance" in lines[3]
    assert any(line.startswith("!  maintenance 'firmware'") and "(Evict), ranks 1: BIOS" in line
               for line in lines)
