"""pynenc's rebuilt spans as a :class:`~exporter.traces.source.SpanSource`: one trace per top-level
invocation (see :mod:`.source` for the trees and :mod:`.convert` for the spans).

The cursor is JSON, per app prefix the highest top-level ``state_backend_invocations.rowid``
discovered (``{"seed_app_d000b1ab__": 42}``); a tree's position is that rowid (positions of two
apps may be equal: the tailer pages pending trees by position, then id).  A tree is finished when
its top-level invocation has a final status; its signature changes with every history row added to
any invocation of the tree.

pynenc writes an invocation's row when it registers it (an upsert: in the fixtures every row was
replaced once right away, so rowids grow in registration order) and not on later transitions.  A row
replaced later would get a new rowid past the cursor: its tree would be discovered and sent again,
with the same ids (a backend deduplicates), never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from exporter.engines.pynenc.traces import source
from exporter.engines.pynenc.traces.convert import InvocationEncoder
from exporter.engines.pynenc.traces.source import TreeInfo
from exporter.engines.pynenc.values import app_config
from exporter.traces.encoded import Encoded, LocalReject
from exporter.traces.source import Found, Limits, Piece, UnitInfo, Work

if TYPE_CHECKING:
    from exporter.reader import Reader, ReadSession


READ_PAGE = 500  # invocations read at a time (each a bound parameter of the IN lists)


class PynencSpans:
    def __init__(self, limits: Limits) -> None:
        self.encoder = InvocationEncoder(limits)

    def source_id(self, db_path: str) -> str:
        return f"pynenc:{db_path}"

    def supported(self, schema: object) -> bool:
        return bool(source.span_apps(schema))

    def discover(self, session: ReadSession, cursor: str | None, limit: int) -> list[Found]:
        marks = source.parse_cursor(cursor)
        found: list[Found] = []
        for app in source.span_apps(session.schema):
            if len(found) >= limit:
                break
            rows = source.tops_after(session.conn, app, marks.get(app.prefix, 0), limit - len(found))
            counts = {top: len(tree) for top, tree in source.members(session.conn, app, [i for _, i in rows]).items()}
            for rowid, top in rows:
                marks[app.prefix] = rowid
                found.append(Found(rowid, top, counts.get(top, 1), source.cursor_text(marks)))
        return found

    def at_end(self, session: ReadSession) -> tuple[str, list[Found]]:
        marks: dict[str, int] = {}
        found: list[Found] = []
        for app in source.span_apps(session.schema):
            marks[app.prefix] = source.max_rowid(session.conn, app)
            unfinished = source.unfinished_tops(session.conn, app)
            trees = source.members(session.conn, app, [i for _, i in unfinished])
            found.extend(Found(r, i, len(trees[i]), "") for r, i in unfinished)
        return source.cursor_text(marks), found

    def check_cursor(self, session: ReadSession, cursor: str, unit_id: str) -> tuple[str, str] | None:
        """pynenc never deletes invocation rows short of a purge: only a mark above an app's table
        (newest rows purged, the file replaced) is moved back, to that table's end."""
        marks = source.parse_cursor(cursor)
        moved = dict(marks)
        for app in source.span_apps(session.schema):
            if app.prefix in marks:
                moved[app.prefix] = min(marks[app.prefix], source.max_rowid(session.conn, app))
        return None if moved == marks else (source.cursor_text(moved), "")

    def behind(self, session: ReadSession, cursor: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        marks = source.parse_cursor(cursor)
        existing: set[str] = set()
        behind: set[str] = set()
        for app in source.span_apps(session.schema):
            rowids = source.top_rowids(session.conn, app, unit_ids)
            existing.update(rowids)
            if cursor is not None:
                behind.update(i for i, r in rowids.items() if r <= marks.get(app.prefix, 0))
        return existing, behind

    def span_counts(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, int]:
        return {i: info.span_count for i, info in self.infos(session, unit_ids).items()}

    def count_after(self, session: ReadSession, cursor: str | None) -> tuple[int, int]:
        marks = source.parse_cursor(cursor)
        trees = invocations = 0
        for app in source.span_apps(session.schema):
            t, i = source.count_trees_after(session.conn, app, marks.get(app.prefix, 0))
            trees += t
            invocations += i
        return trees, invocations

    def infos(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
        return dict(source.tree_infos(session.conn, source.span_apps(session.schema), unit_ids))

    def encode(self, reader: Reader, work: Sequence[Work], chunk: int) -> Iterator[Piece]:
        """Tree by tree, ``chunk`` invocations a read (a tree's members were read with its info)."""
        labels: dict[str, str] = {}
        for w in work:
            tree = w.info
            assert isinstance(tree, TreeInfo)
            todo = [m for m in tree.members if m[0] not in w.skip]
            if not todo:
                yield Piece(tree, [], [], True)
                continue
            step = min(chunk, READ_PAGE)
            for start in range(0, len(todo), step):
                with reader.session() as s:
                    if tree.app.prefix not in labels:
                        labels[tree.app.prefix] = app_config(s.conn, tree.app).label
                    found = source.invocations(s.conn, tree.app, todo[start : start + step])
                encoded: list[Encoded] = []
                rejected: list[LocalReject] = []
                for invocation in found:
                    try:
                        span = self.encoder.encode(tree, labels[tree.app.prefix], invocation, w.mode)
                    except Exception as exc:  # a row this code cannot handle must not block the others
                        span = LocalReject(tree.run_id, invocation.invocation_id, "encode_error", repr(exc))
                    if isinstance(span, Encoded):
                        encoded.append(span)
                    elif span is not None:
                        rejected.append(span)
                yield Piece(tree, encoded, rejected, start + step >= len(todo))
