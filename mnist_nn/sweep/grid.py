"""From flags and grid files to the list of runs a sweep does: one :class:`Settings` per run.

The training flags are not listed here: they are read from ``mnist_nn.train.build_parser()``, so a
flag added to ``train`` (and its ``Settings`` field) can be swept at once. Each such flag takes several
values (``--lr 0.5 3.0``); a flag that takes several numbers in ``train`` (``--hidden 100 30``) takes
one comma list per value here (``--hidden 30 100,30``: a 784-30-10 and a 784-100-30-10 network);
an on/off flag takes ``on``/``off`` (``--batch-norm on off``; alone, ``on``).
The runs are the full grid times the seeds, in a fixed order.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mnist_nn.errors import UsageError
from mnist_nn.settings import Settings

MAX_RUNS = 10_000  # a grid past this is almost surely a typo (--seeds 0-100000), and its plan alone is large
GRID_FILE_LIMIT = 1 << 20  # bytes; a grid file is a few lines
NOT_SWEPT = ("seed",)  # --seeds replaces train's --seed
ON, OFF = ("on", "yes", "true", "1"), ("off", "no", "false", "0")


@dataclass(frozen=True)
class Flag:
    """One training flag as the sweep takes it: its Settings field and how one value is read."""

    dest: str  # the Settings field
    option: str  # --lr
    action: argparse.Action  # train's own, for its type and choices

    @property
    def is_switch(self) -> bool:
        return self.action.nargs == 0

    @property
    def is_list(self) -> bool:
        return self.action.nargs not in (None, 0, "?")

    def convert(self, text: str):
        """One value of this flag from text, checked by train's own type and choices."""
        if self.is_switch:
            word = text.strip().lower()
            if word in ON or word in OFF:
                return word in ON
            raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
        if self.is_list:
            return tuple(self._one(part) for part in text.split(","))
        return self._one(text)

    def _one(self, text: str):
        value = self.action.type(text.strip()) if self.action.type is not None else text.strip()
        if self.action.choices is not None and value not in self.action.choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, self.action.choices))}")
        return value


def training_flags() -> list[Flag]:
    """Every flag of ``python -m mnist_nn.train`` that sets a Settings field (but the seed), in its order."""
    from mnist_nn.train import build_parser

    fields = {f.name for f in dataclasses.fields(Settings)}
    flags, seen = [], set()
    for action in build_parser()._actions:
        if action.dest not in fields or action.dest in NOT_SWEPT or not action.option_strings:
            continue
        if action.dest in seen or action.help == argparse.SUPPRESS:
            continue  # an old alias (--eta) or the --no- half of an on/off flag: one sweep flag per field
        seen.add(action.dest)
        flags.append(Flag(action.dest, next(o for o in action.option_strings if o.startswith("--")), action))
    return flags


def add_training_flags(parser: argparse.ArgumentParser, flags: list[Flag]) -> None:
    group = parser.add_argument_group("training flags (each takes one or more values; every combination is run)")
    for flag in flags:
        converter = _argparse_type(flag)
        help_text = re.sub(r"\s*\(with --resume[^)]*\)", "", flag.action.help or "").replace("%", "%%")
        if flag.is_switch:
            group.add_argument(flag.option, dest=flag.dest, nargs="*", type=converter, metavar="on|off",
                               help=f"{help_text} (sweep: on, off or both; alone: on)")
        else:
            metavar = flag.action.metavar or ("{" + ",".join(map(str, flag.action.choices)) + "}"
                                              if flag.action.choices else flag.dest.upper())
            if flag.is_list:
                metavar = f"{metavar}[,{metavar}...]"
                help_text += " (sweep: one comma list per value, e.g. 30 100,30)"
            group.add_argument(flag.option, dest=flag.dest, nargs="+", type=converter, metavar=metavar,
                               help=help_text)


def _argparse_type(flag: Flag):
    def parse(text: str):
        return flag.convert(text)

    parse.__name__ = flag.option  # argparse names the type in its "invalid ... value" message
    return parse


# --------------------------------------------------------------------------- seeds and grid files

def parse_seeds(text: str) -> list[int]:
    """``0-4``, ``0,3,7`` or ``0-2,9``: the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of seeds such as 0-4 or 0,3,7")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} runs backwards; write {high}-{low}")
        if high >= 2**63 or high - low + 1 + len(seeds) > MAX_RUNS:
            raise argparse.ArgumentTypeError(f"{text!r}: more than {MAX_RUNS} seeds, or a seed past 2^63 - 1")
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def read_grid_file(path: str, flags: list[Flag]) -> tuple[dict[str, list], list[int] | None]:
    """A grid file (TOML or JSON: flag name -> list of values, and optionally ``seeds``)."""
    where = f"--grid {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(GRID_FILE_LIMIT + 1)
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror or exc}); give a TOML or JSON file") from None
    if len(raw) > GRID_FILE_LIMIT:
        raise UsageError(f"{where}: over {GRID_FILE_LIMIT >> 20} MiB, far more than a grid needs")
    table = _parse_grid_text(raw, path, where)
    by_name = {}
    for flag in flags:
        by_name.update({flag.dest: flag, flag.option[2:]: flag, flag.option: flag})
    grid, seeds = {}, None
    for key, values in table.items():
        if key in ("seeds", "--seeds", "seed"):
            seeds = _grid_seeds(values, where)
            continue
        flag = by_name.get(key)
        if flag is None:
            names = ", ".join(f.option[2:] for f in flags)
            raise UsageError(f"{where}: {key!r} is not a training flag; use seeds or one of {names}")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise UsageError(f"{where}: {key} has no values; give a list such as [0.5, 3.0]")
        grid[flag.dest] = [_grid_value(flag, v, f"{where}: {key}") for v in values]
    return grid, seeds


def _parse_grid_text(raw: bytes, path: str, where: str) -> dict:
    try:
        text = raw.decode("utf-8")
        if Path(path).suffix.lower() == ".json" or text.lstrip().startswith("{"):
            table = json.loads(text)
        else:
            import tomllib

            table = tomllib.loads(text)
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply to be a grid") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise UsageError(f"{where}: not readable TOML or JSON ({exc})") from None
    if not isinstance(table, dict):
        raise UsageError(f"{where}: holds a {type(table).__name__}, not a table of flag name -> list of values")
    return table


def _grid_value(flag: Flag, value, where: str):
    try:
        if flag.is_switch and isinstance(value, bool):
            return value
        if flag.is_list:
            parts = value if isinstance(value, list) else [value]
            if not parts or any(isinstance(p, (list, dict, bool)) for p in parts):
                raise argparse.ArgumentTypeError(f"{value!r} is not a number or a list of numbers")
            return flag.convert(",".join(str(p) for p in parts))
        if isinstance(value, (list, dict)) or (isinstance(value, bool) and not flag.is_switch):
            raise argparse.ArgumentTypeError(f"{value!r} is not a single value")
        return flag.convert(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {exc}") from None


def _grid_seeds(values, where: str) -> list[int]:
    try:
        if isinstance(values, str):
            return parse_seeds(values)
        if isinstance(values, list) and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return parse_seeds(",".join(map(str, values)))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{where}: seeds: {exc}") from None
    raise UsageError(f"{where}: seeds must be a list of whole numbers or a text such as \"0-4\", got {values!r}")


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    key: str  # what makes two runs the same run (see run_key)
    settings: Settings
    problem: str | None  # why these settings cannot run (recorded as a failed run, the others go on)


def run_key(settings: Settings) -> str:
    """The identity of a run: its full settings as canonical JSON (a run is never done twice)."""
    return json.dumps(settings.to_dict(), sort_keys=True, separators=(",", ":"))


def run_id(settings: Settings) -> str:
    """A folder name that says what differs from the defaults, and a hash of the full settings that
    keeps two runs apart: ``hidden100_lr0.5_seed3_1f0c9a2e``."""
    defaults = Settings().to_dict()
    parts = []
    for name, value in settings.to_dict().items():
        if name != "seed" and value != defaults.get(name):
            shown = "x".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name}{shown}")
    readable = re.sub(r"[^A-Za-z0-9.+-]+", "-", "_".join(parts))[:80]
    digest = hashlib.sha256(run_key(settings).encode()).hexdigest()[:8]
    return f"{readable + '_' if readable else ''}seed{settings.seed}_{digest}"


def plan(grid: dict[str, list], seeds: list[int], flags: list[Flag]) -> list[PlannedRun]:
    """The full grid times the seeds, in the order of train's flags, then seeds; repeats dropped."""
    names = [f.dest for f in flags if f.dest in grid]
    combos = itertools.product(*(_unique(grid[n]) for n in names))
    count = len(seeds)
    for name in names:
        count *= len(_unique(grid[name]))
    if count > MAX_RUNS:
        raise UsageError(f"the grid has {count} runs, more than {MAX_RUNS}; sweep fewer values or seeds")
    runs, keys = [], set()
    for combo in combos:
        for seed in seeds:
            settings = Settings().replace(**dict(zip(names, combo)), seed=seed)
            try:
                settings.check()
                problem = None
            except UsageError as exc:
                problem = str(exc)
            key = run_key(settings)
            if key not in keys:
                keys.add(key)
                runs.append(PlannedRun(run_id(settings), key, settings, problem))
    return runs


def _unique(values: list) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def describe(settings: Settings, swept: list[str]) -> str:
    """``hidden 30  lr 0.5`` for the swept settings (``hidden 100,30`` for two layers)."""
    shown = []
    for name in swept:
        value = getattr(settings, name)
        shown.append(f"{name} {','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return "  ".join(shown) or "defaults"
