"""The one options mechanism of every command (`serve`, `export`, `udf`).

A command declares its settings once: a frozen dataclass (field names, types and *defaults*) and
an :class:`OptionSet` (flags, environment variables, help, choices). Flags, environment variables,
``--help`` text and the README tables are all derived from those two; nothing else declares a
default. Precedence: command-line flag, else ``<PREFIX><NAME>``, else a compatibility variable
(e.g. ``MLFLOW_PORT``), else the dataclass default. A field without a default is required.

This module (and the per-command ``settings.py`` modules that use it) is the only code that reads
``os.environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A flag or environment variable has a bad value, or a required setting is missing."""


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true/false, 1/0, yes/no)")


def parse_json_object(value: str | dict) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object")
    return data


def parse_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """A repeatable option: a list from the CLI, a comma-separated string from the environment."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


@dataclass(frozen=True)
class Option:
    name: str  # the settings dataclass field
    flags: tuple[str, ...]
    help: str
    type: Callable[[Any], Any] = str  # parses a string from the command line or the environment
    env: tuple[str, ...] = ()  # compatibility variables, lower precedence than <PREFIX><NAME>
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    positional: bool = False  # also accepted as the command's positional argument
    repeatable: bool = False  # `--flag A --flag B`; the environment gives `A,B`


class OptionSet:
    """The options of one settings dataclass, with the environment prefix of its command."""

    def __init__(self, settings_cls: type, env_prefix: str, options: Sequence[Option]) -> None:
        self.cls = settings_cls
        self.prefix = env_prefix
        self.options = tuple(options)
        fields = {f.name: f for f in dataclasses.fields(settings_cls)}
        unknown = [o.name for o in self.options if o.name not in fields]
        if unknown:
            raise TypeError(f"{settings_cls.__name__} has no fields {unknown}")
        self._fields = fields

    # ---- declared facts ----------------------------------------------------------------
    def env_var(self, opt: Option) -> str:
        return self.prefix + opt.name.upper()

    def env_names(self, opt: Option) -> tuple[str, ...]:
        return (self.env_var(opt), *opt.env)

    def all_env_names(self) -> frozenset[str]:
        return frozenset(name for opt in self.options for name in self.env_names(opt))

    def default(self, name: str) -> Any:
        field = self._fields[name]
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return dataclasses.MISSING

    def required(self, opt: Option) -> bool:
        return self.default(opt.name) is dataclasses.MISSING

    def by_name(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    # ---- argparse ------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser | Any) -> None:
        """Add every option (defaults are None so that environment values can be told apart)."""
        for opt in self.options:
            default = self.default(opt.name)
            shown = "required" if default is dataclasses.MISSING else f"default {default}"
            if isinstance(default, tuple) and not default:
                shown = "default none"
            help_text = f"{opt.help} (env {', '.join(self.env_names(opt))}; {shown})"
            if opt.positional:
                parser.add_argument(
                    f"{opt.name}_pos",
                    nargs="?",
                    metavar=opt.metavar or opt.name.upper(),
                    help=opt.help,
                )
            # values stay strings here and are converted in :meth:`values`, so a bad value is a
            # SettingsError each command reports its own way (argparse would exit the process)
            kwargs: dict[str, Any] = {"dest": opt.name, "default": None, "help": help_text}
            if opt.type is parse_bool:
                kwargs.update(nargs="?", const="true", metavar="BOOL")
            elif opt.repeatable:
                kwargs.update(action="append")
            if opt.metavar and opt.type is not parse_bool:
                kwargs["metavar"] = opt.metavar
            if opt.choices and not opt.repeatable:
                kwargs["choices"] = opt.choices
            parser.add_argument(*opt.flags, **kwargs)

    # ---- values --------------------------------------------------------------------------
    def values(
        self, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The explicitly given values (flag, else environment); defaults are left to the class."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for opt in self.options:
            value = getattr(args, opt.name, None) if args is not None else None
            if value is None and opt.positional and args is not None:
                value = getattr(args, f"{opt.name}_pos", None)
            if value is not None:
                value = self._convert(opt, value, opt.flags[0])
            else:
                value = self._from_env(opt, env)
            if value is not None:
                values[opt.name] = value
        return values

    def _from_env(self, opt: Option, env: Mapping[str, str]) -> Any:
        for var in self.env_names(opt):
            raw = env.get(var)
            if raw not in (None, ""):
                return self._convert(opt, raw, f"environment variable {var}={raw!r}")
        return None

    @staticmethod
    def _convert(opt: Option, raw: Any, source: str) -> Any:
        """Parse one flag or variable value; ``source`` names it in the error message."""
        try:
            if opt.repeatable:
                return tuple(opt.type(v) for v in parse_list(raw))
            value = raw if not isinstance(raw, str) and opt.type is not str else opt.type(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{source}: {exc}") from None
        if opt.choices and value not in opt.choices:
            raise SettingsError(f"{source}: choose from {', '.join(map(str, opt.choices))}")
        return value

    def build(
        self,
        args: argparse.Namespace | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Any:
        """The settings object: ``overrides`` > flags > environment > dataclass defaults."""
        values = {**self.values(args, env), **overrides}
        for opt in self.options:
            if opt.name not in values and self.required(opt):
                label = (opt.metavar or opt.name.upper()) if opt.positional else opt.flags[0]
                how = " or ".join(
                    (["argument"] if opt.positional else []) + [*opt.flags, self.env_var(opt)]
                )
                raise SettingsError(f"{label} is required ({how})")
        return self.cls(**values)

    # ---- documentation -------------------------------------------------------------------
    def markdown_table(self) -> str:
        lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
        for opt in self.options:
            env_names = ", ".join(f"`{v}`" for v in self.env_names(opt))
            flags = ", ".join(f"`{f}`" for f in opt.flags)
            default = self.default(opt.name)
            if default is dataclasses.MISSING:
                shown = "required"
            elif default in (None, "", ()) or default == {}:
                shown = "—"
            else:
                shown = f"`{default}`"
            lines.append(f"| {flags} | {env_names} | {shown} | {opt.help} |")
        return "\n".join(lines)


__all__ = [
    "Option",
    "OptionSet",
    "SettingsError",
    "parse_bool",
    "parse_json_object",
    "parse_list",
]
