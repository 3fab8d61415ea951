"""Where each configuration value came from: a line of the YAML file, a variable, a flag.

:func:`parse` builds the data from the composer's node tree (what :func:`yaml.safe_load` would return)
and remembers the line of every key.  :class:`Sources` merges the file, the environment and the
flags, and maps an error location (a tuple of keys) back to the origin of the value found there.
:func:`resolve_keys` checks a key path against the model (environment variables name keys).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

Key = tuple[str, ...]  # mapping keys and list indices, as text

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 32  # no config key is nested this deep


class YamlSyntaxError(Exception):
    """The text is not a single valid YAML document; ``line`` is 1-based."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class YamlDocument:
    data: Any
    lines: dict[Key, int] = field(default_factory=dict)
    # (key path, line of the repeated key, line of its first definition)
    duplicates: list[tuple[Key, int, int]] = field(default_factory=list)

    def line_of(self, loc: Sequence[object]) -> int | None:
        """Line of the longest prefix of ``loc`` written in the file (``None``: not in the file)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(map(str, loc[:end])))
            if line is not None:
                return line
        return None


def parse(text: str) -> YamlDocument:
    """Safe-load ``text`` with positions; raises :class:`YamlSyntaxError`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(data=None)
        if node is not None:
            _walk(node, (), doc, set())  # before construction, which flattens merge keys in place
            doc.data = loader.construct_document(node)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = ": ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        raise YamlSyntaxError(mark.line + 1 if mark else None, message) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, str(exc)) from exc
    finally:
        loader.dispose()


def _walk(node: yaml.Node, path: Key, doc: YamlDocument, seen: set[tuple[int, Key]], *, merged: bool = False) -> None:
    """Record key lines below ``node``.  A node reached again through an alias is not walked again
    (aliases can nest exponentially or form cycles); a merge source is walked once per mapping."""
    doc.lines.setdefault(path, node.start_mark.line + 1)
    visit = (id(node), path if merged else ())
    if visit in seen or len(path) > _MAX_DEPTH:
        return
    seen.add(visit)
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, str(index)), doc, seen)
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    _walk(source, path, doc, seen, merged=True)
            elif isinstance(key_node, yaml.ScalarNode):
                name, line = str(key_node.value), key_node.start_mark.line + 1
                if name in lines and not merged:
                    doc.duplicates.append(((*path, name), line, lines[name]))
                lines[name] = line
                if not merged or (*path, name) not in doc.lines:  # keys written next to <<: win
                    doc.lines[(*path, name)] = line
                    _walk(value_node, (*path, name), doc, seen)


FILE = 0  # source rank of the config file; higher ranks override lower ones


class Sources:
    """The merged raw configuration and, for every key, the source that set its value last."""

    def __init__(self, path: Path | None, doc: YamlDocument) -> None:
        self.path, self.doc = path, doc
        self.data: dict[Any, Any] = {}
        self._origins: dict[Key, tuple[int, str]] = {}  # key -> (source rank, label)
        if isinstance(doc.data, Mapping):
            self.merge((), doc.data, FILE, "")

    def merge(self, keys: tuple[Any, ...], value: Any, rank: int, label: str, skip_none: bool = False) -> None:
        """Set ``value`` at ``keys``, merging mappings key by key (``skip_none``: ``None`` sets nothing)."""
        if value is None and skip_none:
            return
        node = self.data
        for depth, key in enumerate(keys[:-1], 1):
            if not isinstance(node.get(key), dict):
                node[key] = {}
                self._origins[tuple(map(str, keys[:depth]))] = (rank, label)
            node = node[key]
        if keys:
            self._origins[tuple(map(str, keys))] = (rank, label)
        if isinstance(value, Mapping):
            if keys and not isinstance(node.get(keys[-1]), dict):
                node[keys[-1]] = {}
            for key, item in value.items():
                self.merge((*keys, key), item, rank, label, skip_none)
        elif keys:
            node[keys[-1]] = value

    def where(self, loc: Key) -> tuple[str, tuple[int, int]]:
        """``file:line`` or the label of the source of the value at ``loc``, and a sort key."""
        for end in range(len(loc), 0, -1):
            rank, label = self._origins.get(loc[:end], (-1, ""))
            if rank == FILE:
                line = self.doc.line_of(loc)
                return (f"{self.path}:{line}", (FILE, line)) if line else (str(self.path), (FILE, 0))
            if rank > FILE:
                return label, (rank, 0)
        return (str(self.path) if self.path is not None else "configuration"), (99, 0)


def resolve_keys(root: type[BaseModel], parts: Sequence[str], *, fold_case: bool = False) -> tuple[Key, str | None]:
    """The keys ``parts`` name below ``root`` and, when one does not exist, why.  With ``fold_case``
    field names match case-insensitively; keys of ``dict[str, X]`` fields (pipeline or user names)
    keep their case, those of ``dict[str, Any]`` (sections validated elsewhere) are folded."""
    keys: list[str] = []
    current: Any = root
    for part in parts:
        name = part.lower() if fold_case else part
        # dict[str, Model]: the part is a name (a target's), not one of the model's fields
        model = None if get_origin(current) is dict else _submodel(current)
        if not part and fold_case:
            return (*keys, part), "empty key name (separate nested keys with exactly two underscores)"
        if model is not None:
            if name not in model.model_fields:
                # A model lists the keys it used to have, with where their setting lives now.
                retired: Mapping[str, str] = getattr(model, "retired_keys", {})
                if name in retired:
                    return (*keys, name), retired[name]
                valid = sorted(model.model_fields)
                close = difflib.get_close_matches(part.lower(), valid, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
                return (*keys, name), f"unknown key ({hint})"
            current = model.model_fields[name].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
            name = name if current is Any else part
        elif current is not Any:
            return (*keys, name), f"unknown key ({'.'.join(keys)} is a value, not a section)"
        keys.append(name)
    return tuple(keys), None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
