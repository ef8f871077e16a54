"""Time helpers: RFC 3339 and Go durations, and their round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from respool.api import format_duration, format_time, parse_duration, parse_time, parse_time_or_none


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2h45m30.5s", 9930.5),
        ("1us", 1e-6),
        ("1m1m", 120.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "1", "h", "1d", "-1h", "+1h", "1h 30m", "1.2.3s", "1hx", "abc"]
)
def test_parse_duration_rejects_with_the_text(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert "duration" in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (90, "1m30s"),
        (5400, "1h30m"),
        (3600, "1h"),
        (0.25, "250ms"),
        (86400.5, "24h0.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9 * 3600 * 24 * 365))
def test_duration_round_trip_to_the_nanosecond(nanos: int) -> None:
    seconds = nanos / 1e9
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("2026-12-01T08:00:00Z", 1796112000.0),
        ("2026-12-01T10:00:00+02:00", 1796112000.0),
        ("2026-12-01T03:00:00-05:00", 1796112000.0),
        ("2026-12-01t08:00:00z", 1796112000.0),
        ("2026-12-01T08:00:00.5Z", 1796112000.5),
    ],
)
def test_parse_time(text: str, epoch: float) -> None:
    assert parse_time(text) == epoch


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01",
        "2026-12-01T08:00:00",
        "2026-12-01 08:00:00Z",
        "2026-13-01T08:00:00Z",
        "now",
        "2026-02-30T00:00:00Z",
    ],
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    assert "time" in str(caught.value)


def test_format_time() -> None:
    assert format_time(1796112000.0) == "2026-12-01T08:00:00Z"
    assert format_time(1796112000.25) == "2026-12-01T08:00:00.25Z"
    # RFC 3339 years have four digits, also before the year 1000 (strftime writes "1").
    assert format_time(parse_time("0001-01-01T00:00:00Z")) == "0001-01-01T00:00:00Z"
    assert format_time(parse_time("0999-05-06T07:08:09.5Z")) == "0999-05-06T07:08:09.5Z"
    assert format_time(parse_time("9999-12-31T23:59:59Z")) == "9999-12-31T23:59:59Z"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_time_round_trip_is_stable_at_the_microsecond(epoch: float) -> None:
    text = format_time(epoch)
    again = parse_time(text)
    assert abs(again - epoch) <= 1e-6
    assert format_time(again) == text
    assert parse_time(format_time(again)) == again


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "0000-01-01T00:00:00Z"]
)
def test_parse_time_out_of_range_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_time(text)


def test_parse_duration_refuses_what_go_cannot_hold() -> None:
    assert parse_duration("2562047h") == 2562047 * 3600.0
    with pytest.raises(ValueError, match="longest Go duration"):
        parse_duration("99999999999h")


def test_parse_time_or_none_reads_status_times_leniently() -> None:
    assert parse_time_or_none("2026-12-01T08:00:00Z") == parse_time("2026-12-01T08:00:00Z")
    for unknown in (None, "", "yesterday", 1764576000, "2026-13-01T00:00:00Z"):
        assert parse_time_or_none(unknown) is None
