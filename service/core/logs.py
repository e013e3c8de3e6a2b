"""Logging for every VLQ process (API, worker, beat, engine): one JSON object a line, or text for a person.

`auto` (the default) writes text when the log stream is a terminal (`make run`) and JSON lines otherwise
(containers, files, log shippers); `log_format` (VLQ_LOG_FORMAT) picks one outright. Celery's lines about the
periodic maintenance tasks (received, succeeded, sent by beat: a few every `sweep_interval_s`) are DEBUG, so the
INFO stream holds what matters: one line per job state change, and what the passes actually did.

The job (and batch) being handled is kept in a context variable, so every line logged while handling it
carries `job_id` without each call passing it: the worker's task signals set it, the API sets it for
requests about a job, and webhook threads set it for the delivery's subject.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

FORMATS = ("auto", "json", "text")
# Celery's loggers for a task received, succeeded, and sent by beat.
_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")
CONTEXT_KEYS = ("job_id", "batch_id", "delivery_id")
_context: ContextVar[Mapping[str, str]] = ContextVar("vlq_log_context", default=MappingProxyType({}))
# Ids are prefixed and time-ordered (service.core.models.new_id); the prefix says which key an id belongs to.
_ID = re.compile(r"\b(job|batch|msg)_[0-9a-z]{26}\b")
_KEY_OF_PREFIX = {"job": "job_id", "batch": "batch_id", "msg": "delivery_id"}
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", *CONTEXT_KEYS}


def ids_in(*values: Any) -> dict[str, str]:
    """The context keys of the VLQ ids found in `values` (task arguments, a Celery log line's args)."""
    found: dict[str, str] = {}
    for value in values:
        for match in _ID.finditer(str(value)):
            found.setdefault(_KEY_OF_PREFIX[match.group(1)], match.group(0))
    return found


def bind(**ids: str | None) -> object:
    """Add ids to the current context (None values are ignored); returns a token for `unbind`."""
    return _context.set({**_context.get(), **{key: value for key, value in ids.items() if value}})


def unbind(token: object) -> None:
    _context.reset(token)  # type: ignore[arg-type]


@contextmanager
def context(**ids: str | None) -> Iterator[None]:
    """Every line logged inside carries these ids."""
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Puts the current job/batch/delivery ids on each record.

    Celery logs a task's "received" and "succeeded" lines outside the task's own code, passing the task's
    arguments as the record's args; the ids are read from there when the context has none.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ids = dict(_context.get())
        if not ids and isinstance(record.args, Mapping) and "args" in record.args:
            ids = ids_in(record.args["args"])
        for key, value in ids.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the context ids, any `extra`, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        line["process"] = record.process
        line["thread"] = record.threadName
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for development; the ids follow the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if getattr(record, key, None))
        return f"{text} [{ids}]" if ids else text


class RoutineFilter(logging.Filter):
    """Celery's INFO lines about the routine periodic `tasks` (received, succeeded, sent by beat) become DEBUG:
    dropped unless the process logs DEBUG. Their failures keep their level."""

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith(_TASK_LOGGERS) or not self._routine(record):
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    def _routine(self, record: logging.LogRecord) -> bool:
        args = record.args
        values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else ()
        return any(isinstance(value, str) and value in self.tasks for value in values)


def resolve(fmt: str, stream: IO[str] | None = None) -> str:
    """`auto` as json or text: text for a person at a terminal, JSON lines for everything else."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if (stream or sys.stderr).isatty() else "json"
    except (AttributeError, ValueError):  # a stream without isatty, or a closed one
        return "json"


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if resolve(fmt) == "json" else TextFormatter()


def configure(fmt: str = "auto", level: int | str = logging.INFO, *, routine_tasks: Iterable[str] = ()) -> None:
    """Send every logger's records to stderr through one handler in `fmt` (auto, json or text); Celery's lines
    about `routine_tasks` go down to DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    handler.addFilter(RoutineFilter(routine_tasks))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def gunicorn_logconfig(fmt: str) -> dict[str, Any]:
    """A dictConfig for gunicorn: its error and access lines go through the same handler as the app's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"vlq": {"()": formatter, "fmt": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "vlq", "filters": ["context"],
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
                    "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True}},
    }
