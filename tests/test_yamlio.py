"""The shared YAML reader and validation-error formatter (config and sweep files use both)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depthcore.errors import ConfigError
from depthcore.yamlio import (
    format_validation_error,
    load_yaml_text,
    parse_override,
    read_yaml,
    read_yaml_document,
)


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(1.0, ge=0)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner = _Inner()
    items: list[_Inner] = []
    workers: int | Literal["auto"] = "auto"


NESTED = "name: a\ninner:\n  rate: -1\nitems:\n  - {rate: 1}\n  - {rat: 2}\n"


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "f.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def errors_of(path: Path) -> str:
    doc = read_yaml_document(path)
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(doc.data)
    return format_validation_error(info.value, _Outer, source=str(path), lines=doc.lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: \xff\n", "f.yaml: not a UTF-8 text file (invalid start byte at byte 6)"),
        ("a:\n  b: 1\n  c: [2\n", "f.yaml line 4: invalid YAML"),
        ("a:\n  b: 1\n  b: 2\n", "f.yaml line 3: invalid YAML (key 'b' appears twice"),
        ("- 1\n", "f.yaml: expected a mapping of sections at the top level"),
    ],
)
def test_bad_files_name_the_file_and_line(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        read_yaml(write(tmp_path, content))
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_missing_file_names_its_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such sweep file"):
        read_yaml(tmp_path / "nope.yaml", kind="sweep")


def test_lines_of_nested_keys_and_list_items(tmp_path: Path) -> None:
    doc = read_yaml_document(write(tmp_path, NESTED))
    assert doc.data["items"][1] == {"rat": 2}
    assert doc.lines[("inner", "rate")] == 3
    assert doc.lines[("items", 1)] == doc.lines[("items", 1, "rat")] == 6
    assert read_yaml_document(write(tmp_path, "")).data == {}


def test_errors_name_line_key_rule_and_suggestion(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, NESTED)).splitlines() == [
        f"{tmp_path / 'f.yaml'}: 2 problems:",
        "  line 3: inner.rate: must be >= 0, got -1",
        "  line 6: items[1].rat: unknown key (did you mean 'rate'?); known: rate",
    ]
    single = errors_of(write(tmp_path, "name: a\nworkers: many\n"))
    # The union member pydantic tried ("int") is not part of the key.
    where = f"{tmp_path / 'f.yaml'} line 2"
    assert single.startswith(f"{where}: workers: input should be a valid integer")
    assert errors_of(write(tmp_path, "inner: {}\n")).endswith(": name: required key is missing")


def test_values_are_yaml_1_2_numbers() -> None:
    assert load_yaml_text("lr: 1e-4") == {"lr": 1e-4}
    assert parse_override("optim.lr=3e-4") == ("optim.lr", 3e-4)
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("loss.w_c=[0.1")
