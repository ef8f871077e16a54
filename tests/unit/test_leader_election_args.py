"""`respool run --leader-elect` argument checks that need no cluster (the election itself is
tested against the real API server in tests/e2e/test_leader_election.py)."""

from __future__ import annotations

import pytest

from respool.cli.main import build_parser, main
from respool.controller.leader import LeaseTimings, default_identity


def parse(*args: str) -> object:
    argv = ["run", *args]
    return build_parser(argv).parse_args(argv)


def test_defaults_are_client_gos() -> None:
    args = parse("--leader-elect")
    assert (args.leader_elect_lease_duration, args.leader_elect_renew_deadline,  # type: ignore[attr-defined]
            args.leader_elect_retry_period) == (15.0, 10.0, 2.0)  # type: ignore[attr-defined]
    assert args.leader_election_id == "respool-leader"  # type: ignore[attr-defined]
    assert parse().leader_elect is False  # type: ignore[attr-defined]
    LeaseTimings().check()


@pytest.mark.parametrize(("text", "seconds"), [("15s", 15.0), ("1m30s", 90.0), ("2.5", 2.5),
                                               ("500ms", 0.5)])
def test_timings_accept_durations_and_seconds(text: str, seconds: float) -> None:
    assert parse("--leader-elect-retry-period", text).leader_elect_retry_period == seconds  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["0", "-1s", "soon", "nan", "inf", ""])
def test_timings_refuse_nonsense(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--leader-elect-lease-duration", text)
    assert exit_info.value.code == 2
    assert "--leader-elect-lease-duration" in capsys.readouterr().err


@pytest.mark.parametrize(("timings", "complaint"), [
    (LeaseTimings(15, 15, 2), "lease duration (15s) must be more than the renew deadline (15s)"),
    (LeaseTimings(15, 2, 2), "renew deadline (2s) must be more than 1.2 x the retry period"),
])
def test_inconsistent_timings_are_refused(timings: LeaseTimings, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        timings.check()


def test_respool_run_refuses_inconsistent_timings_before_connecting(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--leader-elect", "--leader-elect-renew-deadline", "20s"])
    assert "must be more than the renew deadline" in str(exit_info.value.code)


def test_identity_is_the_pod_name_and_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "respool-7d9f-abcde")
    first, second = default_identity(), default_identity()
    assert first.startswith("respool-7d9f-abcde_") and second.startswith("respool-7d9f-abcde_")
    assert first != second
