"""A sweep's results per setting: the median, min and max over seeds of the final test and validation
accuracy, how many seeds got stuck, and the best setting, written as ``summary.json``, ``summary.md``
and ``summary.png``.

The best setting is the one with the highest median final *validation* accuracy; its test accuracy
is shown beside it but never chooses (with ``--validation-size 0`` there is nothing to choose by,
and no best is named).
"""

from __future__ import annotations

import json
import statistics

from mnist_nn.fileio import write_text
from mnist_nn.sweep.grid import describe

STATS = ("final_test_accuracy", "final_validation_accuracy", "best_validation_accuracy")


def swept_settings(results: list[dict]) -> list[str]:
    """The settings (but the seed) that take more than one value among the results, in Settings order."""
    if not results:
        return []
    names = [n for n in results[0]["settings"] if n != "seed"]
    return [n for n in names if len({json.dumps(r["settings"].get(n)) for r in results}) > 1]


def setting_key(settings: dict) -> str:
    return json.dumps({k: v for k, v in settings.items() if k != "seed"}, sort_keys=True)


def spread(values: list[float]) -> dict | None:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


def summarize(results: list[dict]) -> dict:
    """Per setting (the settings without the seed): seeds, counts, spreads; and the best setting."""
    swept = swept_settings(results)
    shown = swept or _differing_from_defaults(results)
    groups: dict[str, dict] = {}
    for r in results:
        group = groups.setdefault(setting_key(r["settings"]), {
            "settings": {k: v for k, v in r["settings"].items() if k != "seed"},
            "label": describe(SettingsView(r["settings"]), shown), "seeds": [], "ok": 0, "failed": 0, "errors": 0,
            "stuck": 0, "values": {s: [] for s in STATS}})
        group["seeds"].append(r["seed"])
        if r["status"] != "ok":
            group["failed" if r["status"] == "failed" else "errors"] += 1
            continue
        group["ok"] += 1
        group["stuck"] += bool(r.get("stuck_digits"))
        for stat in STATS:
            if r.get(stat) is not None:
                group["values"][stat].append(r[stat])
    rows = []
    for group in groups.values():
        values = group.pop("values")
        group["seeds"].sort()
        rows.append({**group, **{stat: spread(v) for stat, v in values.items()}})
    rows.sort(key=lambda g: [_sortable(g["settings"].get(n)) for n in swept])
    ranked = [g for g in rows if g["final_validation_accuracy"] is not None]
    best = max(ranked, key=lambda g: g["final_validation_accuracy"]["median"]) if ranked else None
    return {"swept": swept, "runs": len(results), "ok": sum(g["ok"] for g in rows),
            "failed": sum(g["failed"] for g in rows), "errors": sum(g["errors"] for g in rows),
            "settings": rows, "best": best["label"] if best else None}


def _differing_from_defaults(results: list[dict]) -> list[str]:
    """What to call the one setting of a sweep over seeds only: what it changes from the defaults."""
    from mnist_nn.settings import Settings

    defaults = Settings().to_dict()
    first = results[0]["settings"] if results else {}
    return [n for n, v in first.items() if n != "seed" and v != defaults.get(n)]


class SettingsView:
    """Attribute access to a settings dict, for :func:`describe` (lists shown as tuples)."""

    def __init__(self, d: dict):
        self.__dict__.update({k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _sortable(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    if isinstance(value, list):
        return (1, len(value), value)  # hidden sizes: 30 before 100, and one layer before two
    return (2, 0, json.dumps(value))


def _pct(s: dict | None, key: str = "median") -> str:
    return f"{100 * s[key]:.2f}%" if s else "-"


def _range(s: dict | None) -> str:
    return f"{100 * s['min']:.2f}-{100 * s['max']:.2f}" if s else "-"


def _cell(s: dict | None) -> str:
    return f"{_pct(s)} ({_range(s)})" if s else "-"


def markdown(summary: dict) -> str:
    """The summary table (one row per setting) and the best setting, as Markdown."""
    lines = ["| setting | seeds | final test, median (min-max) | final validation, median (min-max) | "
             "best-epoch validation, median | stuck | failed |", "|---|---|---|---|---|---|---|"]
    for g in summary["settings"]:
        marker = " **(best)**" if g["label"] == summary["best"] else ""
        lines.append(f"| {g['label']}{marker} | {_seeds_text(g['seeds'])} | {_cell(g['final_test_accuracy'])} | "
                     f"{_cell(g['final_validation_accuracy'])} | {_pct(g['best_validation_accuracy'])} | "
                     f"{g['stuck']} of {g['ok']} | {g['failed'] + g['errors']} |")
    return "\n".join(lines) + "\n\n" + best_line(summary) + "\n"


def best_line(summary: dict) -> str:
    if summary["best"] is None:
        return "best setting: none chosen (no run has a validation set: the test set never chooses)"
    g = next(g for g in summary["settings"] if g["label"] == summary["best"])
    return (f"best setting (median validation accuracy): {g['label']}: validation "
            f"{_pct(g['final_validation_accuracy'])}, test {_pct(g['final_test_accuracy'])} "
            f"(median of {g['ok']} seeds; test min-max {_range(g['final_test_accuracy'])})")


def _seeds_text(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def write(folder, summary: dict) -> list[str]:
    """summary.json, summary.md and summary.png in ``folder``; the names written."""
    write_text(folder / "summary.json", json.dumps(summary, indent=1, allow_nan=False))
    write_text(folder / "summary.md", markdown(summary))
    written = ["summary.md", "summary.json"]
    if summary["ok"]:
        from mnist_nn.sweep.plot import summary_plot

        summary_plot(summary, folder / "summary.png")
        written.append("summary.png")
    return written
