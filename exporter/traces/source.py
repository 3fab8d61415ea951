"""What the tailer and ``replay`` need from an engine to export its spans (engine-neutral).

A *trace unit* is what becomes one trace: a Flujo run, a pynenc top-level invocation with its tree
of child invocations.  Units are discovered in a stable order behind an opaque *cursor* (text the
engine alone reads: Flujo's ``runs.rowid``, pynenc's per-app rowids), which the tailer keeps in its
state file; each unit has an integer *position* in that order (for paging the pending units) and an
id (the state file's ``run_id``).  Per unit the engine says whether it finished, when it started and
ended, and a *signature* that changes whenever its stored spans (or the history they are rebuilt
from) change; the tailer decides from these alone (FINAL / PARTIAL / ABANDON, see
:mod:`exporter.traces.tailer`).  Spans are handed over already encoded (:class:`Encoded`), each with a
key stable within its unit, so the tailer can record which were exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.ids import DEFAULT_IDS, IdScheme

if TYPE_CHECKING:
    from exporter.reader import Reader, ReadSession


@dataclass(frozen=True, slots=True)
class Found:
    """A unit seen by discovery."""

    position: int  # order within its cursor's stream (pending units are paged by it, then by id)
    unit_id: str
    spans: int  # spans it has now (for the backlog)
    cursor: str  # the cursor just past this unit


class UnitInfo(Protocol):
    """One unit as read now (Flujo's ``RunInfo``, pynenc's ``TreeInfo``)."""

    @property
    def run_id(self) -> str: ...

    @property
    def finished(self) -> bool: ...

    @property
    def start(self) -> float | None: ...  # epoch seconds

    @property
    def end(self) -> float | None: ...  # finished units only

    @property
    def signature(self) -> str: ...

    @property
    def span_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Work:
    """A unit to export in one cycle: its info, the mode, the span keys already exported."""

    info: UnitInfo
    mode: Mode
    skip: frozenset[str] | set[str]


@dataclass(frozen=True, slots=True)
class Piece:
    """Encoded spans of one unit; ``last`` once the unit has no more."""

    info: UnitInfo
    encoded: list[Encoded]
    rejected: list[LocalReject]
    last: bool


class SpanSource(Protocol):
    """One engine's spans.  Every read takes a short read session of its own (or the caller's)."""

    def source_id(self, db_path: str) -> str:
        """What the state file is bound to (another value starts it over)."""

    def supported(self, schema: object) -> bool:
        """Whether the file (any engine's schema) has what spans are read from."""

    def discover(self, session: ReadSession, cursor: str | None, limit: int) -> list[Found]:
        """Up to ``limit`` units after ``cursor`` (``None``: from the beginning), in cursor order."""

    def at_end(self, session: ReadSession) -> tuple[str, list[Found]]:
        """For ``start_at: end``: the cursor past every unit, and the units not finished yet."""

    def check_cursor(self, session: ReadSession, cursor: str, unit_id: str) -> tuple[str, str] | None:
        """``None`` when the unit recorded at ``cursor`` is still there; else a cursor moved back (and
        the unit now at it) so that nothing is skipped (rowid reuse, VACUUM)."""

    def behind(self, session: ReadSession, cursor: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """(which of ``unit_ids`` exist, which of those are at or before ``cursor``)."""

    def span_counts(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, int]: ...

    def count_after(self, session: ReadSession, cursor: str | None) -> tuple[int, int]:
        """(units, spans) after ``cursor``: the part of the DB not discovered yet."""

    def infos(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
        """The units that still exist, as they are now."""

    def encode(self, reader: Reader, work: Sequence[Work], chunk: int) -> Iterator[Piece]:
        """The spans of ``work``, unit by unit, in pieces of about ``chunk`` spans; reads in short
        sessions of its own, none open while a piece is being handled."""


@dataclass(frozen=True)
class Limits:
    """What every span source is built with: the attribute limits from ``traces.limits`` (0: none)
    and, travelling with them, the id scheme (``traces.id_namespace``) its trace and span ids come from."""

    count_limit: int
    value_length_limit: int
    ids: IdScheme = DEFAULT_IDS


SourceFactory = Callable[[Limits], SpanSource]
