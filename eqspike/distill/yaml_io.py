"""Run settings in YAML files: ``load_yaml`` reads one into RunConfig fields (an unknown key refused by
name, with the closest valid key suggested; a key given twice refused), ``save_yaml`` writes config.yaml."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from eqspike.distill.config import FIELDS, HINTS, ConfigError, RunConfig, base_type
from eqspike.runtime.files import write_atomic


class _DuplicateKey(Exception):
    def __init__(self, key: Any, lines: str) -> None:
        super().__init__(key)
        self.key, self.lines = key, lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, f"{seen[key] + 1} and {key_node.start_mark.line + 1}")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of RunConfig fields (unknown keys refused by name)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    except _DuplicateKey as duplicate:
        raise ConfigError(
            f"config file {path}: key {duplicate.key!r} is given twice (lines {duplicate.lines}); keep one"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
    return {key: _number_from_text(key, value) for key, value in data.items()}


def _number_from_text(name: str, value: Any) -> Any:
    """YAML 1.1 reads 2e-4 (no dot) as a string: a numeric setting takes numeric text as its number."""
    base = base_type(HINTS[name])
    if not isinstance(value, str) or base not in (int, float) or name == "weight_bits":
        return value
    try:
        number = float(value)
    except ValueError:
        return value  # RunConfig names it as not valid
    if base is int and number.is_integer():
        return int(number)
    return number if base is float else value


def save_yaml(config: RunConfig, path: str | Path) -> None:
    """The settings, one key per field in field order, written in one rename."""
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
