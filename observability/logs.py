"""Structured logs for the project's own loggers: plain text for people, one JSON object a line for machines.

Only our package loggers are configured (the root logger is BentoML's), and they stop
propagating to it so each line is written once. State changes go through `event()`, which
puts the event name and its fields on the record, so a log pipeline can filter on them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal, TextIO

from opentelemetry.trace import get_current_span
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGES = ("rtserve", "service", "app", "core", "frontends", "pipeline", "gateway", "runners", "routing", "observability", "models")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class LogSettings(BaseSettings):
    """Read from the environment (prefix RTSERVE_LOG_) when the service starts."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_LOG_")

    format: Literal["text", "json"] = "text"
    """`json` writes one object a line (timestamp, level, logger, message, fields) for log pipelines."""
    level: str = "INFO"
    """Threshold for the project's loggers (DEBUG, INFO, WARNING, ERROR), independent of BentoML's."""

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        """A typo in the level should stop start-up, not silently log everything or nothing."""
        value = value.upper()
        if not isinstance(logging.getLevelName(value), int):
            raise ValueError(f"unknown log level {value!r}")
        return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the active trace and span ids are added so logs join traces."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(extra_fields(record))
        span = get_current_span().get_span_context()
        if span.is_valid:
            doc.setdefault("trace_id", f"{span.trace_id:032x}")
            doc.setdefault("span_id", f"{span.span_id:016x}")
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """Control characters as escapes (a newline becomes `\\n`): what a client sent cannot start a forged line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """The usual one-line format, with `extra=` fields appended as key=value so text logs lose nothing.

    The message and fields are one line whatever they hold (paths, ids and headers come from
    clients); only a traceback, added after, spans lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return escape_control(line)


_HANDLER_MARK = "_rtserve_handler"
_RESERVED = _STANDARD | {"event"}


def setup_logging(settings: LogSettings | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Give each project package logger one stderr handler in the chosen format; calling again replaces it."""
    settings = settings or LogSettings()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    level = logging.getLevelName(settings.level)
    for package in PACKAGES:
        logger = logging.getLogger(package)
        for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return handler


def event(logger: logging.Logger, name: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log a state change (load, unload, weights, canary decision) as `event=name` plus its fields.

    A field whose name a LogRecord already uses (e.g. `module`), or `event` itself, gets a
    trailing underscore rather than making `logging` raise or hiding the event name.
    """
    if not logger.isEnabledFor(level):
        return
    extra: dict[str, Any] = {"event": name}
    extra.update({(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()})
    logger.log(level, name, extra=extra, stacklevel=2)
