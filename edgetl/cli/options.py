"""Click options generated from the config dataclasses, so flags and YAML keys never drift apart."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import click


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _option(section: str, f: dataclasses.Field, hints: dict[str, Any], choices: dict[str, tuple]) -> Callable:
    flag = f.name.replace("_", "-")
    dest = f"{section}__{f.name}"
    help_text = f.metadata.get("help", "")
    tp = _base_type(hints[f.name])
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is not None:
        help_text = f"{help_text} [default: {default}]"
    if tp is bool:
        return click.option(f"--{flag}/--no-{flag}", dest, default=None, help=help_text)
    click_type = click.Choice(choices[f.name]) if f.name in choices else tp
    return click.option(f"--{flag}", dest, type=click_type, default=None, help=help_text)


def config_options(sections: dict[str, type], choices: dict[str, tuple] | None = None,
                   skip: tuple[str, ...] = ()) -> Callable:
    """Decorator adding one option per field of each config section dataclass."""
    choices = choices or {}

    def decorate(fn: Callable) -> Callable:
        for section, cls in reversed(sections.items()):
            hints = typing.get_type_hints(cls)
            for f in reversed(dataclasses.fields(cls)):
                if f.name not in skip:
                    fn = _option(section, f, hints, choices)(fn)
        return fn

    return decorate


def apply_overrides(config: Any, kwargs: dict[str, Any]) -> None:
    """Set ``config.<section>.<field>`` for every option the user gave (value not None)."""
    for key, value in kwargs.items():
        if "__" in key and value is not None:
            section, name = key.split("__", 1)
            setattr(getattr(config, section), name, value)
