"""One Marianne run -> its encoded OTLP spans (kind INTERNAL): the job, a child per sheet, and a child
of the sheet per attempt.

* ids (:func:`exporter.traces.ids.derived_trace_id` / ``derived_span_id`` under ``marianne-``
  domains, never another engine's): the trace from (job id, ``created_at``, ``started_at``), each
  span from those plus ``job``, ``sheet`` + number, or ``attempt`` + its ``execution_history`` id.
  ``created_at`` alone would not do: Marianne's upsert keeps it when a job id runs again;
* job: from ``started_at`` to ``completed_at`` (a cancelled job, which has none: its last save,
  ``updated_at``); still running, it is left out of a PARTIAL export and otherwise ends at
  ``updated_at``; OK when completed, ERROR when failed (described by ``jobs.error_message``, with
  the error category of its failed sheet), else UNSET;
* sheet: from its first attempt's start (``sheets.started_at`` is the last attempt's) to the later
  of ``completed_at`` and its last attempt's end; one not terminal yet is left out of a PARTIAL
  export and otherwise ends at the job's end or last update; OK when completed, ERROR when failed
  (its ``error_message``, ``error_category``, ``exit_reason``, ``exit_signal``); skipped and
  cancelled UNSET.  Error category and exit reason only on failed sheets: a retried sheet that
  succeeds keeps its last failure's;
* attempt: end ``executed_at``, start ``executed_at - duration_seconds``; every attempt of a sheet
  but its last failed (ERROR, ``failed_then_retried``), the last has its sheet's outcome (an exit
  code 0 can be a failed validation, so the exit code does not decide);
* an end that is not the stored one is flagged ``marianne.exporter.end_time_inferred`` with
  ``marianne.exporter.end_time_source``.  No prompt, no output, nothing from the JSON columns.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial

from exporter.engines.marianne.traces.runs import Attempt, JobRun, RunInfo, Sheet
from exporter.traces import wire
from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.ids import IdScheme
from exporter.traces.source import Limits

TRACE_DOMAIN = b"marianne-trace:"
SPAN_DOMAIN = b"marianne-span:"
END_INFERRED = "marianne.exporter.end_time_inferred"
END_SOURCE = "marianne.exporter.end_time_source"
JOB_KEY = "job"
MAX_MESSAGE = 4096  # characters of an error message kept when no attribute length limit is set
# Attempt outcomes: the words of ``marianne_execution_attempts_total{outcome}``.
SUCCESS, FAILED, FAILED_THEN_RETRIED, UNDECIDED = "success", "failed", "failed_then_retried", "undecided"
_TIMES = struct.Struct("<3sQsQ").pack  # kind INTERNAL, start and end (fixed64)


def trace_id(scheme: IdScheme, run: JobRun) -> bytes:
    return scheme.derived_trace_id(TRACE_DOMAIN, run.job_id, run.created_text, run.started_text)


def span_id(scheme: IdScheme, run: JobRun, *key: str) -> bytes:
    return scheme.derived_span_id(SPAN_DOMAIN, run.job_id, run.created_text, run.started_text, *key)


def _seconds(attempt: Attempt) -> float:
    """An attempt's duration; none recorded (or a negative one): a zero-length span at its end."""
    return attempt.duration if attempt.duration is not None and attempt.duration >= 0 else 0.0


def sheet_key(num: int) -> str:
    return f"sheet:{num}"


def attempt_key(history_id: int) -> str:
    return f"attempt:{history_id}"


class RunEncoder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def _text(self, value: str) -> str:
        limit = self.limits.value_length_limit or MAX_MESSAGE
        return value[:limit] if len(value) > limit else value

    def encode(self, info: RunInfo, mode: Mode, skip: frozenset[str] | set[str]) -> list[Encoded | LocalReject]:
        """The run's spans not in ``skip``, the job first; open ones are left out of a PARTIAL export."""
        run, sheets, attempts = info.run, info.parts.sheets, info.parts.attempts
        by_sheet: dict[int, list[Attempt]] = {}
        for attempt in attempts:
            by_sheet.setdefault(attempt.sheet_num, []).append(attempt)
        with_span = {s.sheet_num for s in sheets if s.bad_time is None}
        todo: list[tuple[str, Callable[[], Encoded | LocalReject | None]]] = []
        if JOB_KEY not in skip:
            todo.append((JOB_KEY, lambda: self._job(run, sheets, mode)))
        for sheet in sheets:
            if sheet_key(sheet.sheet_num) not in skip:
                tried = by_sheet.get(sheet.sheet_num, [])
                todo.append((sheet_key(sheet.sheet_num), partial(self._sheet, run, sheet, tried, mode)))
        sheet_status = {s.sheet_num: s for s in sheets}
        for num, tried in by_sheet.items():
            parent = sheet_key(num) if num in with_span else JOB_KEY
            for attempt in tried:
                if attempt_key(attempt.history_id) not in skip:
                    last = attempt is tried[-1]
                    todo.append(
                        (
                            attempt_key(attempt.history_id),
                            partial(self._attempt, run, attempt, last, sheet_status.get(num), parent),
                        )
                    )
        found: list[Encoded | LocalReject | None] = []
        for key, make in todo:
            try:
                found.append(make())
            except Exception as exc:  # a row this code cannot handle must not block the others
                found.append(LocalReject(run.unit_id, key, "encode_error", repr(exc)))
        return [span for span in found if span is not None]

    # --- the three kinds ---------------------------------------------------------------------------
    def _job(self, run: JobRun, sheets: list[Sheet], mode: Mode) -> Encoded | None:
        attributes: dict[str, wire.AttrValue] = {
            "marianne.job_id": self._text(run.job_id),
            "marianne.job_name": self._text(run.name),
            "marianne.status": self._text(run.status),
        }
        for key, value in (
            ("marianne.total_sheets", run.total_sheets),
            ("marianne.last_completed_sheet", run.last_completed_sheet),
            ("marianne.total_retry_count", run.total_retry_count),
            ("marianne.rate_limit_waits", run.rate_limit_waits),
        ):
            if value is not None:
                attributes[key] = value
        if run.finished and run.completed is not None:
            end = run.completed
        elif run.finished or mode is not Mode.PARTIAL:
            end = run.updated if run.updated is not None else run.start
            attributes[END_INFERRED] = True
            attributes[END_SOURCE] = "updated_at" if run.updated is not None else "started_at"
        else:
            return None  # running: its end is not known yet
        status = b""
        if run.status == "completed":
            status = wire.status(wire.STATUS_OK, None)
        elif run.status == "failed":
            failed = [s for s in sheets if s.status == "failed"]
            category = next((s.error_category for s in failed if s.error_category), None)
            if category is not None:
                attributes.update(self._category(category))
            status = wire.status(wire.STATUS_ERROR, self._text(run.error_message or "job failed"))
        return self._span(run, JOB_KEY, None, run.name, run.start, end, attributes, status)

    def _sheet(self, run: JobRun, sheet: Sheet, tried: list[Attempt], mode: Mode) -> Encoded | LocalReject | None:
        key = sheet_key(sheet.sheet_num)
        if sheet.bad_time is not None:
            return LocalReject(run.unit_id, key, "invalid_start_time", f"sheet time is not a time: {sheet.bad_time}")
        ends = [a.executed for a in tried if a.executed is not None]
        starts = [a.executed - _seconds(a) for a in tried if a.executed is not None]
        start = min([t for t in (sheet.started, sheet.completed) if t is not None] + starts)
        attributes: dict[str, wire.AttrValue] = {
            "marianne.sheet_num": sheet.sheet_num,
            "marianne.status": self._text(sheet.status),
        }
        if sheet.attempt_count is not None:
            attributes["marianne.attempt_count"] = sheet.attempt_count
        if sheet.exit_code is not None:
            attributes["marianne.exit_code"] = sheet.exit_code
        if sheet.duration is not None:
            attributes["marianne.execution_duration_seconds"] = sheet.duration
        if sheet.terminal:
            end = max([t for t in (sheet.completed,) if t is not None] + ends, default=start)
        elif mode is Mode.PARTIAL:
            return None
        else:
            job_end = run.end
            source = "job_end" if job_end is not None else "updated_at"
            closing = job_end if job_end is not None else run.updated
            end = max([t for t in (closing, sheet.completed) if t is not None] + ends, default=start)
            attributes[END_INFERRED] = True
            attributes[END_SOURCE] = source
        status = b""
        if sheet.status == "completed":
            status = wire.status(wire.STATUS_OK, None)
        elif sheet.status == "failed":
            attributes.update(self._failure(sheet))
            status = wire.status(wire.STATUS_ERROR, self._text(sheet.error_message or "sheet failed"))
        return self._span(run, key, JOB_KEY, f"sheet {sheet.sheet_num}", start, end, attributes, status)

    def _attempt(
        self, run: JobRun, attempt: Attempt, last: bool, sheet: Sheet | None, parent: str
    ) -> Encoded | LocalReject:
        key = attempt_key(attempt.history_id)
        if attempt.executed is None:
            return LocalReject(
                run.unit_id, key, "invalid_start_time", f"executed_at is not a time: {attempt.executed_raw!r}"
            )
        end = attempt.executed
        if not last:
            outcome = FAILED_THEN_RETRIED
        elif sheet is not None and sheet.status == "completed":
            outcome = SUCCESS
        elif sheet is not None and sheet.status == "failed":
            outcome = FAILED
        else:
            outcome = UNDECIDED
        attributes: dict[str, wire.AttrValue] = {
            "marianne.sheet_num": attempt.sheet_num,
            "marianne.attempt_num": attempt.attempt_num,
            "marianne.execution_id": attempt.history_id,
            "marianne.outcome": outcome,
        }
        if attempt.exit_code is not None:
            attributes["marianne.exit_code"] = attempt.exit_code
        status = b""
        if outcome == SUCCESS:
            status = wire.status(wire.STATUS_OK, None)
        elif outcome == FAILED_THEN_RETRIED:
            status = wire.status(wire.STATUS_ERROR, "attempt failed and was retried")
        elif outcome == FAILED and sheet is not None:
            attributes.update(self._failure(sheet))
            status = wire.status(wire.STATUS_ERROR, self._text(sheet.error_message or "sheet failed"))
        name = f"attempt {attempt.attempt_num}"
        return self._span(run, key, parent, name, end - _seconds(attempt), end, attributes, status)

    # --- helpers -----------------------------------------------------------------------------------
    def _category(self, category: str) -> dict[str, wire.AttrValue]:
        text = self._text(category)
        return {"marianne.error_category": text, "error.type": text}

    def _failure(self, sheet: Sheet) -> dict[str, wire.AttrValue]:
        """What a failed sheet (and its last attempt) says about the failure."""
        found = self._category(sheet.error_category) if sheet.error_category else {}
        if sheet.exit_reason:
            found["marianne.exit_reason"] = self._text(sheet.exit_reason)
        if sheet.exit_signal is not None:
            found["marianne.exit_signal"] = sheet.exit_signal
        return found

    def _span(
        self,
        run: JobRun,
        key: str,
        parent: str | None,
        name: str,
        start: float,
        end: float,
        attributes: dict[str, wire.AttrValue],
        status: bytes,
    ) -> Encoded:
        end = max(end, start)
        dropped = 0
        if self.limits.count_limit and len(attributes) > self.limits.count_limit:
            dropped = len(attributes) - self.limits.count_limit
            attributes = dict(list(attributes.items())[: self.limits.count_limit])
        parent_field = b"" if parent is None else b"\x22\x08" + span_id(self.limits.ids, run, *parent.split(":"))
        body = b"".join(
            (
                b"\x0a\x10" + trace_id(self.limits.ids, run),
                b"\x12\x08" + span_id(self.limits.ids, run, *key.split(":")),
                parent_field,
                wire.field_bytes(b"\x2a", wire.utf8(self._text(name))),
                _TIMES(b"\x30\x01\x39", wire.nanos(start), b"\x41", wire.nanos(end)),
                wire.attribute_fields(b"\x4a", attributes),
                b"\x50" + wire.varint(dropped) if dropped else b"",
                status,
            )
        )
        field = wire.field_bytes(b"\x12", body)
        return Encoded(run.unit_id, key, field, len(field))
