"""Train the reference configurations over several seeds and print the accuracy table the README quotes.

    python scripts/accuracy_table.py [--data-dir D] [--mirror URL] [--offline] [--keep DIR]

Configurations and the bounds they must meet (median over the seeds):
  defaults (784-30-10, quadratic, N(0,1), batch 10, eta 3.0, 30 epochs), seeds 0-4: final >= 94.8%, best >= 95.0%
  --cost cross-entropy --init scaled --lr 0.5, seeds 0-4:                        final >= 95.5%, best >= 96.0%
  --validation-size 0 --hidden 100 --cost cross-entropy --init scaled --lr 0.5 --l2 5.0 --epochs 60, seed 0:
                                                                                  final >= 97.8%
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mnist_nn import train
from mnist_nn.cli import ArgumentParser

CONFIGS = [
    ("defaults", [], range(5), 0.948, 0.950),
    ("cross-entropy, scaled init, lr 0.5", ["--cost", "cross-entropy", "--init", "scaled", "--lr", "0.5"], range(5),
     0.955, 0.960),
    ("60k train, 100 hidden, cross-entropy, scaled, lr 0.5, l2 5.0, 60 epochs",
     ["--validation-size", "0", "--hidden", "100", "--cost", "cross-entropy", "--init", "scaled", "--lr", "0.5",
      "--l2", "5.0", "--epochs", "60"], range(1), 0.978, None),
]


def main(argv=None) -> int:
    parser = ArgumentParser(prog="scripts/accuracy_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="MNIST cache folder")
    parser.add_argument("--mirror", action="append", help="download mirror tried first")
    parser.add_argument("--offline", action="store_true", help="never download")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR (default: a temporary folder)")
    args = parser.parse_args(argv)
    data_flags = (["--data-dir", args.data_dir] if args.data_dir else []) + (["--offline"] if args.offline else [])
    for mirror in args.mirror or []:
        data_flags += ["--mirror", mirror]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mnist_nn-accuracy-"))
    rows, all_met = [], True
    for name, flags, seeds, final_bound, best_bound in CONFIGS:
        finals, bests, started = [], [], time.perf_counter()
        for seed in seeds:
            out = root / f"{name.split(',')[0].replace(' ', '-')}-seed{seed}"
            with contextlib.redirect_stdout(io.StringIO()):  # each run's own summary is not part of the table
                code = train.main([*flags, *data_flags, "--seed", str(seed), "--out", str(out), "--quiet",
                                   "--no-plot"])
            if code != 0:
                print(f"error: training {name} seed {seed} failed (exit {code})", file=sys.stderr)
                return code
            epochs = json.loads((out / "history.json").read_text())["epochs"]
            finals.append(epochs[-1]["test_accuracy"])
            bests.append(max(r["test_accuracy"] for r in epochs))
        final, best = statistics.median(finals), statistics.median(bests)
        met = final >= final_bound and (best_bound is None or best >= best_bound)
        all_met &= met
        rows.append(f"| {name} | {min(seeds)}-{max(seeds)} | {100 * final:.2f}% "
                    f"({', '.join(f'{100 * f:.2f}' for f in finals)}) | {100 * best:.2f}% | "
                    f">= {100 * final_bound:.1f}%" + (f" / >= {100 * best_bound:.1f}%" if best_bound else "")
                    + f" | {'yes' if met else 'NO'} | {time.perf_counter() - started:.0f} s |")
    print("| configuration | seeds | final test accuracy, median (each seed) | best epoch, median | "
          "bound final / best | met | time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nrun folders: {root}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
