"""Adaptor output as structured logs: hclog JSON, go-plugin text levels, panics, odd JSON."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.supervisor.logs import LineBuffer, LineParser, LogRecord, emit, logger_for


def parse(line: str) -> LogRecord:
    return LineParser().parse(line)


def test_hclog_json_line() -> None:
    line = json.dumps(
        {
            "@level": "warn",
            "@message": "ledger slow",
            "@timestamp": "2026-01-01T00:00:00.000000Z",
            "@module": "xrpl",
            "latency_ms": 1200,
            "peer": "alice",
        }
    )
    record = parse(line + "\n")
    assert record.level == logging.WARNING
    assert record.message == "ledger slow"
    assert record.timestamp == "2026-01-01T00:00:00.000000Z"
    assert record.fields == {"@module": "xrpl", "latency_ms": 1200, "peer": "alice"}


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("trace", logging.DEBUG),
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("WARNING", logging.WARNING),
        ("error", logging.ERROR),
        ("fatal", logging.CRITICAL),
        ("loud", logging.INFO),
    ],
)
def test_hclog_levels(name: str, level: int) -> None:
    assert parse(json.dumps({"@level": name, "@message": "m"})).level == level


@pytest.mark.parametrize(
    ("line", "level", "message", "timestamp"),
    [
        ("[TRACE] entering", logging.DEBUG, "entering", ""),
        ("[DEBUG] dialing ledger", logging.DEBUG, "dialing ledger", ""),
        ("[INFO] ready", logging.INFO, "ready", ""),
        ("[WARN] slow", logging.WARNING, "slow", ""),
        ("[ERROR] lost ledger", logging.ERROR, "lost ledger", ""),
        (
            "2026-01-01T00:00:00.000Z [ERROR] plugin: lost",
            logging.ERROR,
            "plugin: lost",
            "2026-01-01T00:00:00.000Z",
        ),
    ],
)
def test_text_level_prefixes(line: str, level: int, message: str, timestamp: str) -> None:
    record = parse(line)
    assert (record.level, record.message, record.timestamp) == (level, message, timestamp)
    assert record.fields == {}


def test_plain_text_is_info() -> None:
    assert parse("just some words [ERROR] inside") == LogRecord(
        logging.INFO, "just some words [ERROR] inside"
    )


def test_a_go_runtime_fatal_error_is_followed_like_a_panic() -> None:
    parser = LineParser()
    assert parser.parse("fatal error: concurrent map writes").level == logging.ERROR
    assert parser.parse("goroutine 7 [running]:").level == logging.ERROR


def test_after_a_panic_every_line_is_an_error() -> None:
    parser = LineParser()
    assert parser.parse("[DEBUG] fine").level == logging.DEBUG
    lines = [
        "panic: runtime error: index out of range [3] with length 3",
        "",
        "goroutine 1 [running]:",
        "main.main()",
        '{"@level": "info", "@message": "not really info any more"}',
        "[INFO] nor this",
    ]
    records = [parser.parse(line) for line in lines]
    assert all(record.level == logging.ERROR for record in records)
    assert records[0].message.startswith("panic: runtime error")
    assert records[4].message == lines[4]  # kept verbatim, not parsed


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2, 3]",
        "42",
        '"a string"',
        "null",
        "{not json",
        '{"@level": 3, "@message": ["a"], "@timestamp": 17}',
        '{"@level": null}',
        "{}",
        "{" * 5000 + "}" * 5000,
        '{"@message": "\\ud800"}',
    ],
)
def test_odd_json_never_raises(line: str) -> None:
    record = parse(line)
    assert isinstance(record.message, str)
    assert isinstance(record.timestamp, str)
    assert record.level in (logging.INFO, logging.ERROR)


def test_json_with_bad_types_keeps_what_it_can() -> None:
    record = parse('{"@level": 3, "@message": ["a"], "@timestamp": 17, "k": "v"}')
    assert record.level == logging.INFO
    assert record.message == '["a"]'
    assert record.timestamp == "17"
    assert record.fields == {"k": "v"}


def test_non_object_json_is_text() -> None:
    assert parse("[1, 2]") == LogRecord(logging.INFO, "[1, 2]")


@given(st.text(max_size=300))
def test_any_line_parses(line: str) -> None:
    record = LineParser().parse(line)
    assert isinstance(record.message, str)


def test_emit_puts_fields_in_extra(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ilp_host.adaptor")
    record = parse(
        json.dumps(
            {"@level": "error", "@message": "paid twice?", "module": "x", "account": "alice"}
        )
    )
    emit(logger_for("memory"), "memory", "stderr", record)
    [logged] = caplog.records
    assert logged.name == "ilp_host.adaptor.memory"
    assert logged.levelno == logging.ERROR
    assert logged.getMessage().startswith("paid twice?")
    assert "account=alice" in logged.getMessage()
    assert logged.__dict__["adaptor"] == "memory"
    assert logged.__dict__["stream"] == "stderr"
    assert logged.__dict__["account"] == "alice"
    # "module" is a LogRecord attribute: the field is renamed, the record keeps its own.
    assert logged.__dict__["field_module"] == "x"
    assert logged.module != "x"
    assert logged.__dict__["fields"] == {"module": "x", "account": "alice"}


def test_emit_respects_the_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ilp_host.adaptor")
    emit(logger_for("memory"), "memory", "stderr", LogRecord(logging.INFO, "chatter"))
    assert caplog.records == []


def test_line_buffer_reassembles_chunks() -> None:
    buffer = LineBuffer()
    assert buffer.feed(b"hel") == []
    assert buffer.feed(b"lo\r\nwor") == ["hello"]
    assert buffer.feed(b"ld\n\nlast") == ["world", ""]
    assert buffer.flush() == ["last"]
    assert buffer.flush() == []


def test_line_buffer_bounds_a_line_without_newline() -> None:
    buffer = LineBuffer(limit=10)
    lines = buffer.feed(b"x" * 25)
    assert lines == ["x" * 10, "x" * 10]
    assert buffer.flush() == ["x" * 5]


def test_line_buffer_replaces_bad_utf8() -> None:
    assert LineBuffer().feed(b"caf\xc3\xa9 \xff\n") == ["café \ufffd"]
