"""The Train tab's form, derived from the library rather than written out: one field per
:class:`~mnist_nn.settings.Settings` field, with the default from ``Settings()`` and the flag, choices,
kind and help of the same setting in ``python -m mnist_nn.train``'s parser, so a setting added to both
appears on the page with no change here. A submitted form is read back by :func:`settings_from_json`,
checked by ``Settings.check`` (the messages name the flag, as on the command line).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import secrets

from mnist_nn.errors import UsageError
from mnist_nn.settings import Settings

_DEFAULT_NOTE = re.compile(r"\s*\[default[^\]]*\]\s*$")


def _actions() -> dict[str, argparse.Action]:
    from mnist_nn.train import build_parser

    found = {}
    for action in build_parser()._actions:  # argparse has no public list of its actions
        if action.help != argparse.SUPPRESS and action.option_strings:
            found.setdefault(action.dest, action)
    return found


def _kind(action: argparse.Action | None, default) -> str:
    """How the page asks for a value: choice, bool, int, float, ints (a list) or text."""
    if action is not None:
        if action.choices:
            return "choice"
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return "bool"
        if action.nargs in ("+", "*"):
            return "ints"
        probe = action.type
        if probe is not None:
            for kind, sample in (("int", "1"), ("float", "0.5")):
                try:
                    value = probe(sample)
                except (argparse.ArgumentTypeError, ValueError, TypeError):
                    continue
                if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
                    try:
                        probe("0.5")
                    except (argparse.ArgumentTypeError, ValueError, TypeError):
                        return "int"  # takes whole numbers only
                    return "float"
                if kind == "float" and isinstance(value, float):
                    return "float"
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("ints", tuple), ("text", str)):
        if isinstance(default, types):
            return kind
    return "text"


def fields() -> list[dict]:
    """The form: name, flag, kind, default, choices and help of every training setting."""
    actions, defaults, out = _actions(), Settings(), []
    for field in dataclasses.fields(Settings):
        action = actions.get(field.name)
        default = getattr(defaults, field.name)
        out.append({"name": field.name, "flag": action.option_strings[0] if action else None,
                    "kind": _kind(action, default),
                    "default": list(default) if isinstance(default, tuple) else default,
                    "choices": list(action.choices) if action is not None and action.choices else None,
                    "help": _DEFAULT_NOTE.sub("", action.help or "") if action is not None else ""})
    return out


def settings_from_json(body) -> Settings:
    """Settings from a JSON object of setting names and values (missing ones take the defaults);
    :class:`UsageError` names an unknown setting or a bad value."""
    if not isinstance(body, dict):
        raise UsageError("send the settings as a JSON object, e.g. {\"epochs\": 2, \"hidden\": [30]}")
    names = [f.name for f in dataclasses.fields(Settings)]
    unknown = [k for k in body if k not in names]
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(names)}")
    given = dict(body)
    if given.get("seed") == "random":  # as --seed random: one drawn, and recorded in history.json
        given["seed"] = secrets.randbelow(2**31)
    if isinstance(given.get("hidden"), list):
        given["hidden"] = tuple(given["hidden"])
    try:
        return Settings().replace(**given).check()
    except (TypeError, ValueError) as exc:  # a value of a type the dataclass cannot even hold
        raise UsageError(f"settings: {exc}") from None
