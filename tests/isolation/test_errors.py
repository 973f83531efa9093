"""Errors as data: one codec (ErrorReport) for calls, streams and a child's final report.

Whatever raised, the other side rebuilds the same error: a builtin keeps its type, any other
type is named by module and qualified name, an error from a further hop keeps its first type;
and a report received from a child is bounded and never trusted.
"""

from __future__ import annotations

import pytest

from isolation import RemoteError
from isolation._errors import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    MAX_TYPE_CHARS,
    ErrorReport,
)


class Rejected(Exception):
    pass


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_builtin_is_named_bare_and_rebuilt_as_itself() -> None:
    report = ErrorReport.of(_raised(ValueError("no such pair")))
    assert (report.type, report.message) == ("ValueError", "no such pair")
    assert "raise exc" in report.traceback
    error = report.rebuild("Prices", "get_price")
    assert isinstance(error, ValueError) and isinstance(error, RemoteError)
    assert str(error) == "Prices.get_price raised ValueError: no such pair"


def test_other_types_are_named_by_module_and_stay_remote_errors() -> None:
    report = ErrorReport.of(_raised(Rejected("limits")))
    assert report.type == f"{__name__}.Rejected"
    error = report.rebuild("Prices", "trade")
    assert type(error) is RemoteError and error.remote_type == f"{__name__}.Rejected"


def test_an_error_from_a_further_hop_keeps_its_first_type() -> None:
    first = ErrorReport.of(_raised(KeyError("ETH"))).rebuild("Feed", "price")
    again = ErrorReport.of(first)
    assert (again.type, again.message) == ("KeyError", "'ETH'")
    assert isinstance(again.rebuild("Strategy", "quote"), KeyError)


def test_the_map_form_round_trips() -> None:
    report = ErrorReport.of(_raised(RuntimeError("boom")))
    assert ErrorReport.from_data(report.to_data()) == report


@pytest.mark.parametrize(
    "data",
    [None, 42, "text", [], {"type": 1, "message": b"x", "traceback": None}, {"unexpected": "x"}],
)
def test_a_malformed_report_is_read_as_an_unknown_error(data: object) -> None:
    """A hostile child's report is never trusted: only strings are kept."""
    report = ErrorReport.from_data(data)
    assert report == ErrorReport("UnknownError", "", "")
    assert type(report.rebuild("Vendor", "run")) is RemoteError


def test_reports_are_bounded() -> None:
    """However much a child sends, a report holds at most its bounds (the traceback's end)."""
    huge = {"type": "T" * 10**6, "message": "m" * 10**6, "traceback": "x" * 10**6 + "END"}
    report = ErrorReport.from_data(huge)
    assert len(report.type) == MAX_TYPE_CHARS
    assert len(report.message) == MAX_MESSAGE_CHARS
    assert len(report.traceback) <= MAX_TRACEBACK_CHARS + 4 and report.traceback.endswith("END")
    long_message = ErrorReport.of(_raised(ValueError("v" * 10**6)))
    assert len(long_message.message) == MAX_MESSAGE_CHARS
