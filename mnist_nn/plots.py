"""Pictures of what happened: learning curves (and, later, what the network learned).

Always the non-interactive Agg backend: plots are written to PNG files, never shown in a window.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mnist_nn.fileio import atomic_write  # noqa: E402


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` (PNG) atomically and close it."""
    path = Path(path)
    with atomic_write(path) as (f, _):
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(runs: list[list[dict]], labels: list[str], path) -> Path:
    """Test (solid) and validation (dashed) accuracy and training cost per epoch, one colour per run.

    ``runs`` holds each run's epoch records as written in history.json.
    """
    fig, (acc_ax, cost_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for records, label, colour in zip(runs, labels, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        epochs = [r["epoch"] for r in records]
        acc_ax.plot(epochs, [100 * r["test_accuracy"] for r in records], color=colour, label=f"{label} test")
        val = [r["validation_accuracy"] for r in records]
        if all(v is not None for v in val):
            acc_ax.plot(epochs, [100 * v for v in val], color=colour, linestyle="--", label=f"{label} val")
        cost_ax.plot(epochs, [r["train_cost"] for r in records], color=colour, label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    cost_ax.set(xlabel="epoch", ylabel="training cost", title="Cost on the training set", yscale="log")
    for ax in (acc_ax, cost_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
