"""Reading YAML and JSON documents that come from outside: bounded in size, depth and aliases.

Plan files, a planner model's answer, templates, ``.claude/agents/*.md`` front matter and
model-server scripts all come through here, so a hostile or broken document costs at most
its own size, and every failure is a ``DocumentError`` (or, for a YAML syntax error, the
``yaml.YAMLError`` that names the line) instead of a ``MemoryError``, a ``RecursionError``
or a hang:

- ``read_document`` reads only regular files (a FIFO, a device such as ``/dev/zero``, a
  socket or a directory is refused from ``os.stat``, before any read) and at most
  ``max_bytes + 1`` bytes: a file that grows while it is read is still refused;
- ``load_yaml`` walks the parser's events first (libyaml, no recursion) and refuses
  nesting deeper than ``max_depth``, recursive aliases, and aliases that expand to more
  than ``MIN_ALIAS_NODES + ALIAS_NODES_PER_NODE * (nodes written in the document)`` nodes
  (the "billion laughs": a few lines whose aliases would expand to 10^9 nodes) or to more
  than ``MIN_ALIAS_CHARS + ALIAS_CHARS_PER_CHAR * (characters of the document)`` characters
  of text (one long value named by many aliases: 1 MB that becomes 400 MB of prompts). Only
  then is the document built, with the safe loader;
- ``load_json`` refuses the same depth, and numbers Python will not convert (``int`` has
  a 4300-digit limit).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml

from maos.errors import DocumentError

__all__ = [
    "ALIAS_CHARS_PER_CHAR",
    "ALIAS_NODES_PER_NODE",
    "MAX_DEPTH",
    "MIN_ALIAS_CHARS",
    "MIN_ALIAS_NODES",
    "DocumentError",
    "check_depth",
    "check_file_kind",
    "describe_yaml_error",
    "load_json",
    "load_yaml",
    "read_document",
    "read_text",
]

MAX_DEPTH = 64
"""Collections inside collections; plans need about 5, scripts and front matter about 10."""
MIN_ALIAS_NODES = 10_000
ALIAS_NODES_PER_NODE = 4
"""Aliases may add ``MIN_ALIAS_NODES`` nodes plus this many per node the document writes."""
MIN_ALIAS_CHARS = 16 << 20
ALIAS_CHARS_PER_CHAR = 4
"""Aliases may add ``MIN_ALIAS_CHARS`` characters of scalars plus this many per character of
the document: a shared prompt named by a few hundred tasks passes, 1 MB named 400 times not."""


def read_document(path: str | os.PathLike[str], *, max_bytes: int, follow_links: bool = True) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them;
    ``follow_links=False``: a symbolic link at ``path`` is refused, not read through."""
    try:
        info = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        raise DocumentError("file not found") from None
    except OSError as exc:
        raise DocumentError(f"cannot read the file: {exc.strerror or exc}") from exc
    check_file_kind(info.st_mode)
    _check_size(info.st_size, max_bytes)
    try:
        # O_NONBLOCK: a FIFO put there after the stat must not block the open.
        nofollow = 0 if follow_links else os.O_NOFOLLOW  # a link put there after the lstat
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | nofollow | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DocumentError(f"cannot read the file: {exc.strerror or exc}") from exc
    with open(fd, "rb", closefd=True) as file:
        check_file_kind(os.fstat(fd).st_mode)
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise DocumentError(f"cannot read the file: {exc.strerror or exc}") from exc
    _check_size(len(data), max_bytes)
    return data


def check_file_kind(mode: int) -> None:
    """``DocumentError`` saying what the file is unless ``mode`` is a regular file's."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise DocumentError("is a directory, not a file")
    kinds = (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link (not followed)"),
    )
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    raise DocumentError(f"is {kind}, not a regular file")


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DocumentError(f"the file is larger than the limit of {max_bytes} bytes")


# --------------------------------------------------------------------------- JSON


def load_json(
    text: str,
    *,
    max_depth: int = MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> object:
    """``json.loads`` that refuses deep nesting and numbers too long to convert.

    A syntax error is raised as ``json.JSONDecodeError`` (it names the line and column)."""
    try:
        data = json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise DocumentError(f"nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        if type(exc) is not ValueError:
            raise  # the hook's own error
        raise DocumentError(_invalid_value(exc)) from None
    check_depth(data, max_depth)
    return data


def check_depth(data: object, max_depth: int = MAX_DEPTH) -> None:
    """``DocumentError`` when ``data`` (dicts and lists) nests deeper than ``max_depth``.

    Iterative: the data can be as deep as the recursion limit allows json to go."""
    todo: list[tuple[object, int]] = [(data, 0)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth + 1 > max_depth:
            raise DocumentError(f"nested more than {max_depth} levels deep")
        todo.extend((child, depth + 1) for child in children)


# --------------------------------------------------------------------------- YAML

_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"
_BaseYamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseYamlLoader):  # type: ignore[valid-type,misc]
    """The safe loader (C-accelerated when available) that rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == _YAML_MERGE_TAG:  # `<<: *defaults` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def load_yaml(text: str, *, unique_keys: bool = True, max_depth: int = MAX_DEPTH) -> object:
    """One YAML document, with the limits of the module docstring.

    ``unique_keys``: a key repeated in one mapping is an error (else the last one wins, as
    in plain YAML). Raises ``yaml.YAMLError`` for a syntax error and ``DocumentError`` for a
    limit (its message starts with ``line L, column C:`` when there is a place to name).
    """
    loader = _UniqueKeyLoader if unique_keys else _BaseYamlLoader
    _check_events(text, max_depth)
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader subclass
    except RecursionError:  # a long chain of merges (`<<: *a`), each into the next
        raise DocumentError(f"nested more than {max_depth} levels deep") from None
    except yaml.YAMLError:
        raise
    except ValueError as exc:  # an integer of more than 4300 digits
        raise DocumentError(_invalid_value(exc)) from None


def _invalid_value(exc: ValueError) -> str:
    if "digits" in str(exc):
        return "invalid value: a number with more digits than Python converts (4300)"
    return f"invalid value: {' '.join(str(exc).split())[:200]}"


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _check_events(text: str, max_depth: int) -> None:
    """Depth and alias expansion, counted on the parser's events (nothing is built)."""
    # Each open collection: [anchor, nodes in it so far, its height so far, characters in it].
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int, int]] = {}  # anchor -> (nodes, height, characters) it names
    written = 0
    aliased = 0
    aliased_chars = 0
    ceiling = MIN_ALIAS_NODES + ALIAS_NODES_PER_NODE * len(text)  # a node takes a byte at least
    chars_ceiling = MIN_ALIAS_CHARS + ALIAS_CHARS_PER_CHAR * len(text)

    def add(nodes: int, height: int, chars: int) -> None:
        if stack:
            stack[-1][1] += nodes
            stack[-1][2] = max(stack[-1][2], height + 1)
            stack[-1][3] += chars

    for event in yaml.parse(text, Loader=_BaseYamlLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= max_depth:
                raise DocumentError(f"{_where(event)}nested more than {max_depth} levels deep")
            written += 1
            stack.append([event.anchor, 1, 1, 0])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes, height, chars = stack.pop()
            if anchor is not None:
                anchors[anchor] = (nodes, height, chars)
            add(nodes, height, chars)
        elif isinstance(event, yaml.ScalarEvent):
            written += 1
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0, len(event.value))
            add(1, 0, len(event.value))
        elif isinstance(event, yaml.AliasEvent):
            if any(frame[0] == event.anchor for frame in stack):
                raise DocumentError(f"{_where(event)}alias *{event.anchor} refers to a collection it is in")
            # undefined: the composer says so
            nodes, height, chars = anchors.get(event.anchor or "", (1, 0, 0))
            if len(stack) + height > max_depth:
                raise DocumentError(
                    f"{_where(event)}alias *{event.anchor} makes it nested more than {max_depth} levels deep"
                )
            aliased += nodes
            aliased_chars += chars
            if aliased > ceiling:
                break
            if aliased_chars > chars_ceiling:
                raise DocumentError(
                    f"{_where(event)}its aliases (*name) repeat more than {chars_ceiling} characters of "
                    f"text (the limit for a document of {len(text)}); write the values out or use fewer "
                    "aliases"
                )
            add(nodes, height, chars)
    if aliased > MIN_ALIAS_NODES + ALIAS_NODES_PER_NODE * written:
        raise DocumentError(
            f"its aliases (*name) expand to more than {MIN_ALIAS_NODES + ALIAS_NODES_PER_NODE * written} "
            f"values (the limit for a document of {written} values); write the values out or use "
            "fewer aliases"
        )


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``line L, column C: invalid YAML: PROBLEM (CONTEXT started at line M)``, one line."""
    if not isinstance(exc, yaml.MarkedYAMLError):  # e.g. ReaderError: a control character
        return f"invalid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = exc.problem or "syntax error"
    context = ""
    if exc.context:
        context = f" ({exc.context}"
        if exc.context_mark is not None and exc.problem_mark is not None:
            context += f" started at line {exc.context_mark.line + 1}"
        context += ")"
    return f"{where}invalid YAML: {problem}{context}"


def read_text(path: Path, *, max_bytes: int) -> str:
    """``read_document`` decoded as UTF-8 (a BOM is dropped); ``DocumentError`` otherwise."""
    raw = read_document(path, max_bytes=max_bytes)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DocumentError(f"line {line}: the file is not valid UTF-8 text") from exc
