"""YAML in and out for config and sweep files, and the one way their errors are explained.

`read_yaml_document` reads a file once into its data and the line of every key; a file that is
missing, not UTF-8, not valid YAML (the line is named), has a key twice, or is not a mapping at the
top raises a one-line `ConfigError` naming the file. `format_validation_error` turns a pydantic
`ValidationError` into one line per problem: the key, its YAML line when known, what is allowed
and, for an unknown key, the closest known one.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from depthcore.errors import ConfigError

__all__ = [
    "KeyPath",
    "YamlDocument",
    "YamlLoader",
    "did_you_mean",
    "dump_yaml",
    "format_loc",
    "format_validation_error",
    "key_lines",
    "known_keys",
    "line_of",
    "load_yaml_text",
    "parse_override",
    "read_yaml",
    "read_yaml_document",
]

KeyPath = tuple[str | int, ...]  # mapping keys and sequence indices, as in pydantic's `loc`


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.2) and refuses a key written twice.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`) and `1e-4` is a string.
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _mapping_without_duplicates(loader: YamlLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # PyYAML keeps the last of two equal keys; in a config that hides a mistake.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # a complex key: construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in this mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


YamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with `YamlLoader` (safe; `1e-4` is a float; duplicate keys are errors)."""
    return yaml.load(text, Loader=YamlLoader)


def dump_yaml(data: Any) -> str:
    """Plain YAML in the order given (what `load_yaml_text` reads back)."""
    return yaml.safe_dump(data, sort_keys=False)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `dotted.key=value`; the value is read as YAML (`0.5`, `true`, `[0, 1]`, `null`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value, e.g. loss.w_c=0.5")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return key, value


# ----------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file's top-level mapping and the 1-based line of each key and list item in it."""

    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)


def read_yaml_document(
    path: str | Path, *, kind: str = "config", expected: str = "a mapping of sections"
) -> YamlDocument:
    """Read a YAML mapping (an empty file is `{}`); every error names the file.

    `kind` names the file in 'no such <kind> file'; `expected` says what the top level must be.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {kind} file ({exc.strerror})") from None
    try:
        node, data = _compose_and_construct(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return YamlDocument({})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected} at the top level")
    return YamlDocument(data, key_lines(node))


def read_yaml(
    path: str | Path, *, kind: str = "config", expected: str = "a mapping of sections"
) -> dict[str, Any]:
    """The data of `read_yaml_document` (same checks and errors)."""
    return read_yaml_document(path, kind=kind, expected=expected).data


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    # One parse gives both the node tree (for lines) and the data.
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def key_lines(root: yaml.Node | None) -> dict[KeyPath, int]:
    """(key, index, ...) path -> 1-based line, from a composed YAML node tree."""
    lines: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, i)] = value.start_mark.line + 1
                walk(value, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def line_of(lines: Mapping[KeyPath, int], loc: Sequence[str | int]) -> int | None:
    """The line of `loc`, else of its closest parent that has one (None when none has)."""
    for n in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:n]))
        if line:
            return line
    return None


def format_loc(loc: Sequence[str | int]) -> str:
    """('trials', 0, 'label') -> 'trials[0].label'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ----------------------------------------------------------------------------------------------
# Validation errors

_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
# pydantic appends the union member it tried ("int", "literal['auto']") to an error's location.
_TYPE_TAGS = {"int", "float", "str", "bool", "none", "tuple", "list", "race"}


def _key_loc(loc: Sequence[str | int]) -> KeyPath:
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))


def did_you_mean(word: str, known: Sequence[str], cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for the closest of `known`, or '' when none is close."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_keys(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names of the model found at `path` inside `model` ([] when it is no model).

    A dict or list on the way takes one part of the path (its key or index).
    """
    ann: Any = model
    for part in path:
        ann = _model_in(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            info = ann.model_fields.get(str(part))
            if info is None:
                return []
            ann = info.annotation
        elif get_origin(ann) in (dict, list) and get_args(ann):
            ann = get_args(ann)[-1]
        else:
            return []
    ann = _model_in(ann)
    return list(ann.model_fields) if isinstance(ann, type) and issubclass(ann, BaseModel) else []


def _model_in(ann: Any) -> Any:
    # `Section | None` is the model for key lookups; Annotated[...] wrappers are looked through.
    ann = _unannotated(ann)
    if get_origin(ann) in (Union, types.UnionType):
        models = [a for a in _members(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else ann
    return ann


def _members(union: Any) -> list[Any]:
    out = []
    for member in map(_unannotated, get_args(union)):
        nested = get_origin(member) in (Union, types.UnionType)
        out += _members(member) if nested else [member]
    return out


def _unannotated(ann: Any) -> Any:
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann


def _describe(err: ErrorDetails, model: type[BaseModel], loc: KeyPath) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f", got {err['input']!r}" if kind != "missing" else ""
    if kind == "extra_forbidden":
        known = known_keys(model, loc[:-1])
        return f"unknown key{did_you_mean(str(loc[-1]), known)}; known: {', '.join(known)}"
    if kind == "missing":
        return "required key is missing"
    if kind in _BOUNDS:
        (limit,) = ctx.values()
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"must be {_BOUNDS[kind]} {limit}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'].rstrip('.').lower()}{got}"


def format_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    source: str = "",
    lines: Mapping[KeyPath, int] | None = None,
) -> str:
    """One line per problem key: `cfg.yaml line 3: loss.w_c: must be >= 0, got -0.1`.

    `model` is the model that was validated (for the known keys of an unknown one); `source`
    names the file and `lines` (`YamlDocument.lines`) adds the line of each key.
    """
    problems: dict[str, tuple[int | None, str]] = {}
    for err in exc.errors(include_url=False):
        loc = _key_loc(err["loc"])
        key = format_loc(loc)
        text = _describe(err, model, loc)
        problems.setdefault(key, (line_of(lines or {}, loc), f"{key}: {text}" if key else text))
    if len(problems) == 1:
        ((line, text),) = problems.values()
        where = " ".join(w for w in (source, f"line {line}" if line else "") if w)
        return f"{where}: {text}" if where else text
    items = [f"line {line}: {text}" if line else text for line, text in problems.values()]
    where = f"{source}: " if source else ""
    return f"{where}{len(items)} problems:\n  " + "\n  ".join(items)
