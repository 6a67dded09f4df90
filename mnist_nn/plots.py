"""Pictures of what happened: learning curves (and, later, what the network learned).

Always the non-interactive Agg backend: plots are written to PNG files, never shown in a window.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mnist_nn.fileio import atomic_write  # noqa: E402

MAX_HIDDEN_PICTURES = 100  # hidden units drawn by hidden_weights: 10 rows of 10 stay readable on a screen


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` (PNG) atomically and close it."""
    path = Path(path)
    with atomic_write(path) as (f, _):
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def learning_curves(runs: list[list[dict]], labels: list[str], path) -> Path:
    """Test (solid), validation (dashed) and training (dotted) accuracy and training cost per epoch, one
    colour per run: the gap between the training and the other curves is the variance, the distance of
    all of them from 100% the bias.

    ``runs`` holds each run's epoch records as written in history.json.
    """
    # Fixed margins: a constrained layout costs about 0.4 s of the training command at the end.
    fig, (acc_ax, cost_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.93, wspace=0.22)
    for records, label, colour in zip(runs, labels, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        epochs = [r["epoch"] for r in records]
        acc_ax.plot(epochs, [100 * r["test_accuracy"] for r in records], color=colour, label=f"{label} test")
        val = [r["validation_accuracy"] for r in records]
        if all(v is not None for v in val):
            acc_ax.plot(epochs, [100 * v for v in val], color=colour, linestyle="--", label=f"{label} val")
        train = [r.get("train_accuracy") for r in records]
        if all(v is not None for v in train):
            acc_ax.plot(epochs, [100 * v for v in train], color=colour, linestyle=":", label=f"{label} train")
        cost_ax.plot(epochs, [r["train_cost"] for r in records], color=colour, label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (train dotted: the gap is the variance)")
    cost_ax.set(xlabel="epoch", ylabel="training cost", title="Cost on the training set", yscale="log")
    for ax in (acc_ax, cost_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def accuracy_by_size(sizes, test, train, path, title: str = "Accuracy against the training-set size") -> Path:
    """Test and training accuracy (%, lists of numbers, or of lists over seeds: their median is drawn,
    the seeds as dots) against the number of training images, on a log axis: the bias/variance picture."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.91)
    for values, name, style in ((train, "training", "o:"), (test, "test", "o-")):
        per_size = [np.atleast_1d(np.asarray(v, float)) for v in values]
        ax.plot(sizes, [np.median(v) for v in per_size], style, label=f"{name} accuracy (median)")
        for n, v in zip(sizes, per_size):
            ax.scatter([n] * len(v), v, s=8, color="grey", alpha=0.5)
    ax.set(xscale="log", xlabel="training images", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def confusion_matrix(matrix, path, title: str = "Confusion matrix") -> Path:
    """Annotated heat map: rows are true digits, columns predicted ones."""
    import numpy as np

    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    threshold = np.log1p(matrix).max() / 2
    for (true, pred), count in np.ndenumerate(matrix):
        ax.text(pred, true, str(count), ha="center", va="center", fontsize=7,
                color="white" if np.log1p(count) > threshold else "black")
    ax.set(xticks=range(matrix.shape[1]), yticks=range(matrix.shape[0]), xlabel="predicted", ylabel="true",
           title=title)
    return save_figure(fig, path)


def digit_grid(images, titles, path, columns: int = 8, suptitle: str | None = None) -> Path:
    """Rows of 28x28 digits (ink bright), each with a small title."""
    import math

    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def hidden_weights(weights, path, limit: int = MAX_HIDDEN_PICTURES) -> Path:
    """The first layer's weights into each hidden unit, as a 28x28 picture (blue negative, red positive):
    the first ``limit`` units at most (more would be too small to read, and slow to draw)."""
    import math

    import numpy as np

    total = len(weights)
    weights = np.asarray(weights[:limit], dtype=float)
    columns = min(10, len(weights))
    rows = math.ceil(len(weights) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for unit, (ax, w) in enumerate(zip(axes.flat, weights)):
        extent = np.abs(w).max() or 1.0
        ax.imshow(w.reshape(28, 28), cmap="RdBu_r", vmin=-extent, vmax=extent)
        ax.set_title(str(unit), fontsize=7)
    shown = "each hidden unit" if total <= limit else f"the first {limit} of {total} hidden units"
    fig.suptitle(f"Weights into {shown} (red positive, blue negative)")
    return save_figure(fig, path)
