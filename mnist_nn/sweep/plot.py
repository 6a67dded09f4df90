"""``summary.png``: accuracy against the swept setting, one line per combination of the other swept
settings, the bars the spread (min to max) over seeds; beside it a heat map of the median when
exactly two settings are swept."""

from __future__ import annotations

import json

from mnist_nn.plots import plt, save_figure


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def summary_plot(summary: dict, path) -> None:
    rows = [g for g in summary["settings"] if g["ok"]]
    metric = "final_validation_accuracy" if any(g["final_validation_accuracy"] for g in rows) else "final_test_accuracy"
    rows = [g for g in rows if g[metric]]  # a setting without a validation set has no point on a validation plot
    which = "validation" if metric == "final_validation_accuracy" else "test"
    swept = summary["swept"]
    # On the x axis: the swept setting with the most values (the others make the lines).
    x_name = max(swept, key=lambda n: len({json.dumps(g["settings"][n]) for g in rows})) if swept else None
    others = [n for n in swept if n != x_name]
    x_values = _ordered([g["settings"][x_name] for g in rows]) if x_name else [None]
    heat = len(swept) == 2
    fig, axes = plt.subplots(1, 2 if heat else 1, figsize=(11 if heat else 6.5, 4.2), squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.14, top=0.9, wspace=0.3)
    ax = axes[0][0]
    lines: dict[str, list] = {}
    for g in rows:
        label = "  ".join(f"{n} {_text(g['settings'][n])}" for n in others) or which
        lines.setdefault(label, []).append(g)
    for i, (label, groups) in enumerate(lines.items()):
        points = sorted(((x_values.index(g["settings"][x_name]) if x_name else 0, g) for g in groups),
                        key=lambda p: p[0])
        xs = [p[0] + (i - (len(lines) - 1) / 2) * 0.04 for p in points]  # nudged apart: bars do not overlap
        med = [100 * p[1][metric]["median"] for p in points]
        low = [m - 100 * p[1][metric]["min"] for m, p in zip(med, points)]
        high = [100 * p[1][metric]["max"] - m for m, p in zip(med, points)]
        ax.errorbar(xs, med, yerr=[low, high], marker="o", capsize=4, label=label)
    ax.set_xticks(range(len(x_values)), [_text(v) if x_name else "all runs" for v in x_values])
    ax.set(xlabel=x_name or "", ylabel=f"final {which} accuracy (%)",
           title=f"Median over seeds, bars min-max ({summary['ok']} runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if heat:
        _heat_map(axes[0][1], rows, metric, which, x_name, others[0], x_values)
    save_figure(fig, path)


def _heat_map(ax, rows, metric, which, x_name, y_name, x_values) -> None:
    import numpy as np

    y_values = _ordered([g["settings"][y_name] for g in rows])
    grid = np.full((len(y_values), len(x_values)), np.nan)
    for g in rows:
        grid[y_values.index(g["settings"][y_name]), x_values.index(g["settings"][x_name])] = 100 * g[metric]["median"]
    shown = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(x_values)), [_text(v) for v in x_values])
    ax.set_yticks(range(len(y_values)), [_text(v) for v in y_values])
    ax.set(xlabel=x_name, ylabel=y_name, title=f"Median final {which} accuracy (%)")
    ax.figure.colorbar(shown, ax=ax)


def _ordered(values: list) -> list:
    unique = []
    for v in values:
        if v not in unique:
            unique.append(v)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique)
    if numbers:
        return sorted(unique)
    if all(isinstance(v, list) for v in unique):
        return sorted(unique, key=lambda v: (len(v), v))  # hidden sizes: 30, 100, then 100,30
    return unique
