"""Overlay the learning curves of several training runs in one PNG.

    python scripts/plot_history.py runs/A runs/B [runs/C ...] [--out comparison.png]

Each run is labelled by the settings that differ between the runs (e.g. "lr=0.5 cost=cross-entropy"),
or by its folder name when they all share the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnist_nn.cli import ArgumentParser, finish, run_command
from mnist_nn.errors import UsageError


def run_labels(settings: list[dict], folders: list[Path]) -> list[str]:
    keys = [k for k in settings[0] if k != "epochs" and len({json.dumps(s.get(k)) for s in settings}) > 1]
    if not keys:
        return [folder.name for folder in folders]
    return [" ".join(f"{k}={s.get(k)}" for k in keys) for s in settings]


def read_history(folder: Path) -> dict:
    """A run's history.json, with the fields the plot needs checked (one line naming what is wrong)."""
    path = folder / "history.json" if folder.is_dir() else folder
    try:
        if path.stat().st_size > 64 * 2**20:
            raise UsageError(f"{path}: over 64 MiB, far more than a run's history")
        history = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        raise UsageError(f"{folder}: no readable history.json (is it a folder written by mnist_nn.train?)") from None
    records = history.get("epochs") if isinstance(history, dict) else None
    if not isinstance(records, list) or not records:
        raise UsageError(f"{path}: no epochs recorded; nothing to plot")
    for record in records:
        if not isinstance(record, dict) or not all(
                isinstance(record.get(key), (int, float)) for key in ("epoch", "test_accuracy", "train_cost")):
            raise UsageError(f"{path}: an epoch record lacks epoch, test_accuracy or train_cost")
        record.setdefault("validation_accuracy", None)
    if not isinstance(history.get("settings"), dict):
        history["settings"] = {}
    return history


def main(argv=None) -> int:
    parser = ArgumentParser(prog="scripts/plot_history.py",
                            description="Overlay test/validation accuracy and training cost of several runs.")
    parser.add_argument("runs", metavar="RUN_DIR", nargs="+", help="folders written by python -m mnist_nn.train")
    parser.add_argument("--out", default="comparison.png", help="PNG to write (default comparison.png)")
    args = parser.parse_args(argv)
    folders = [Path(r) for r in args.runs]
    histories = [read_history(folder) for folder in folders]
    from mnist_nn.plots import learning_curves

    labels = run_labels([h["settings"] for h in histories], folders)
    try:
        path = learning_curves([h["epochs"] for h in histories], labels, args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write there ({exc.strerror or exc}); choose another path") from None
    print(f"wrote {path} ({len(histories)} runs: {'; '.join(labels)})")
    return 0


if __name__ == "__main__":
    finish(run_command(main, prog="scripts/plot_history.py"))
