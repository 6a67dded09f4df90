"""Train the reference configurations over several seeds and print the accuracy table the README quotes.

    python scripts/accuracy_table.py [--data-dir D] [--mirror URL] [--offline] [--keep DIR]

Each run goes through mnist_nn.fit() in this process, the data loaded once.

Configurations and the bounds they must meet (median over the seeds):
  defaults (784-30-10, quadratic, N(0,1), batch 10, eta 3.0, 30 epochs), seeds 0-4: final >= 94.8%, best >= 95.0%
  --cost cross-entropy --init scaled --lr 0.5, seeds 0-4:                        final >= 95.5%, best >= 96.0%
  --validation-size 0 --hidden 100 --cost cross-entropy --init scaled --lr 0.5 --l2 5.0 --epochs 60, seed 0:
                                                                                  final >= 97.8%
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from mnist_nn import fitting
from mnist_nn.cli import ArgumentParser, add_data_flags, finish, load_data, run_command
from mnist_nn.settings import Settings

SCALED_CE = dict(cost="cross-entropy", init="scaled", lr=0.5)
CONFIGS = [
    ("defaults", Settings(), range(5), 0.948, 0.950),
    ("cross-entropy, scaled init, lr 0.5", Settings(**SCALED_CE), range(5), 0.955, 0.960),
    ("60k train, 100 hidden, cross-entropy, scaled, lr 0.5, l2 5.0, 60 epochs",
     Settings(**SCALED_CE, validation_size=0, hidden=(100,), l2=5.0, epochs=60), range(1), 0.978, None),
]


def main(argv=None) -> int:
    parser = ArgumentParser(prog="scripts/accuracy_table.py", description=__doc__.split("\n\n")[0])
    add_data_flags(parser)
    parser.add_argument("--keep", metavar="DIR", help="keep each run's folder (model.npz, history.json) under DIR "
                                                      "[default: runs are kept in memory only]")
    args = parser.parse_args(argv)
    rows, all_met, data = [], True, {}
    for name, settings, seeds, final_bound, best_bound in CONFIGS:
        if settings.validation_size not in data:  # each split loaded once, shared by the runs that use it
            data[settings.validation_size] = load_data(args, settings.validation_size, settings.dtype, quiet=True)
        finals, bests, started = [], [], time.perf_counter()
        for seed in seeds:
            out = Path(args.keep) / f"{name.split(',')[0].replace(' ', '-')}-seed{seed}" if args.keep else None
            run = fitting.fit(settings.replace(seed=seed), data[settings.validation_size], out=out)
            finals.append(run.final["test_accuracy"])
            bests.append(max(r["test_accuracy"] for r in run.records))
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
    if args.keep:
        print(f"\nrun folders: {args.keep}")
    return 0 if all_met else 1


if __name__ == "__main__":
    finish(run_command(main, prog="scripts/accuracy_table.py"))
