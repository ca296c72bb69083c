"""Logging setup for every process (the server, its workers, the CLI): text for people, JSON lines for log
pipelines. Fields passed with `extra={...}` (model, version, peer, ...) become JSON keys, or `key=value` pairs
after a text line."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; values that are not plain words are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{k}={_text_value(v)}" for k, v in extra_fields(record).items()]
        if not pairs:
            return line
        head, newline, trace = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(pairs)}{newline}{trace}"


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, sort_keys=True)


class JsonLines(JsonFormatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, then the record's fields."""

    def __init__(self, static: dict[str, Any]):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", static_fields=static, json_default=str,
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


def check_level(level: str) -> str:
    if str(level).upper() not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)}, got {level!r}")
    return str(level).upper()


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def setup(level: str = "INFO", fmt: str = "text", worker: int | None = None) -> None:
    """Replace the root logger's handlers with one on stderr in `fmt`; `worker` tags every line of a
    `serve --workers N` process."""
    static = {} if worker is None else {"worker": worker}
    if check_format(fmt) == "json":
        formatter: logging.Formatter = JsonLines(static)
    else:
        tag = "" if worker is None else f" worker{worker}"
        formatter = TextFormatter(f"%(asctime)s{tag} %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(check_level(level))
