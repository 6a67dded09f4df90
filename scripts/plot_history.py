"""Overlay the learning curves of several training runs in one PNG.

    python scripts/plot_history.py runs/A runs/B [runs/C ...] [--out comparison.png]

Each run is labelled by the settings that differ between the runs (e.g. "lr=0.5 cost=cross-entropy"),
or by its folder name when they all share the same settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mnist_nn.cli import ArgumentParser


def run_labels(settings: list[dict], folders: list[Path]) -> list[str]:
    keys = [k for k in settings[0] if k != "epochs" and len({json.dumps(s.get(k)) for s in settings}) > 1]
    if not keys:
        return [folder.name for folder in folders]
    return [" ".join(f"{k}={s.get(k)}" for k in keys) for s in settings]


def main(argv=None) -> int:
    parser = ArgumentParser(prog="scripts/plot_history.py",
                            description="Overlay test/validation accuracy and training cost of several runs.")
    parser.add_argument("runs", metavar="RUN_DIR", nargs="+", help="folders written by python -m mnist_nn.train")
    parser.add_argument("--out", default="comparison.png", help="PNG to write (default comparison.png)")
    args = parser.parse_args(argv)
    folders, histories = [Path(r) for r in args.runs], []
    for folder in folders:
        try:
            histories.append(json.loads((folder / "history.json").read_text()))
        except (OSError, ValueError):
            print(f"error: {folder}: no readable history.json (is it a folder written by mnist_nn.train?)",
                  file=sys.stderr)
            return 1
    from mnist_nn.plots import learning_curves

    labels = run_labels([h["settings"] for h in histories], folders)
    path = learning_curves([h["epochs"] for h in histories], labels, args.out)
    print(f"wrote {path} ({len(histories)} runs: {'; '.join(labels)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
