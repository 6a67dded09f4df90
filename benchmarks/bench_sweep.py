"""The sweep's cost and its speed-up: the same sweep (default: 8 seeds of the classic setup, 30 epochs)
on a LocalCluster of 1 and of 2 workers, against the same runs done by ``mnist_nn.fit`` one after
another in one process, each written to its run folder as ``python -m mnist_nn.train`` writes it
(the data loaded once).

    python benchmarks/bench_sweep.py [--runs 8] [--epochs 30] [--workers 1 2] [--json F] [--data-dir D]

Prints runs per minute, the speed-up over 1 worker, and the overhead per run of 1 worker against
one process: what Dask, sending the run back and writing it cost. The sweep's times count from the
first submission to the last result (the cluster's start-up is shown on its own).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_outputs, header, limit_threads, markdown_table  # noqa: E402

limit_threads(1)  # one thread per process everywhere: the workers inherit it

import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from mnist_nn.cli import ArgumentParser, add_data_flags, finish, int_at_least, load_data, run_command  # noqa: E402


def in_one_process(planned, data, background: bool) -> float:
    """Seconds for every planned run through fit(), one after another, each into its run folder as
    ``python -m mnist_nn.train`` writes it, after an untimed warm-up epoch; ``background``: measuring
    each epoch on a second thread (as the train command does) or between epochs (as a worker does)."""
    from mnist_nn import fitting

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as out:
        fitting.fit(planned[0].settings.replace(epochs=1), data)  # Numba's cache and the first allocations
        started = time.perf_counter()
        for run in planned:
            fitting.fit(run.settings, data, out=Path(out) / run.run_id, measure_in_background=background)
        return time.perf_counter() - started


def on_cluster(planned, workers: int, source) -> dict:
    from mnist_nn.sweep import run_sweep

    marks = {}

    def start(todo, existing):
        marks["first"] = time.perf_counter()

    def result(record, folder):
        marks["last"] = time.perf_counter()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as out:
        outcome = run_sweep(planned, Path(out) / "sweep", source=source, workers=workers, on_start=start,
                            on_result=result)
    failed = [r for r in outcome.done if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"a benchmark run failed: {failed[0].get('error')}")
    total = time.perf_counter() - started
    runs_seconds = marks["last"] - marks["first"]
    return {"workers": workers, "seconds": round(runs_seconds, 3), "wall_seconds": round(total, 3),
            "runs_per_minute": round(60 * len(planned) / runs_seconds, 2),
            "worker_seconds": round(sum(r["seconds"] for r in outcome.done), 3),
            "median_run_on_worker": round(statistics.median(r["seconds"] for r in outcome.done), 3),
            "first_run_on_worker": round(max(r["seconds"] for r in outcome.done), 3)}


def main(argv=None) -> int:
    parser = ArgumentParser(prog="benchmarks/bench_sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int_at_least(1), default=8, help="runs in the sweep (seeds 0..N-1) [default 8]")
    parser.add_argument("--epochs", type=int_at_least(1), default=30, help="epochs per run [default 30]")
    parser.add_argument("--workers", type=int_at_least(1), nargs="+", default=[1, 2], metavar="N",
                        help="local cluster sizes to time [default 1 2]")
    parser.add_argument("--validation-size", type=int_at_least(0), default=10_000,
                        help="validation images held out of training [default 10000]")
    parser.add_argument("--quick", action="store_true", help="2 runs of 2 epochs (a smoke test, not a measurement)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", metavar="PATH", help="draw runs per minute of each way as a PNG")
    add_data_flags(parser)
    args = parser.parse_args(argv)
    check_outputs(args.json, args.plot)
    if args.quick:
        args.runs, args.epochs = 2, 2
    from mnist_nn.settings import Settings
    from mnist_nn.sweep import DataSource, grid
    from mnist_nn.sweep.__main__ import _mirrors

    planned = grid.plan({"epochs": [args.epochs], "validation_size": [args.validation_size]},
                        list(range(args.runs)), grid.training_flags())
    data = load_data(args, args.validation_size, Settings().dtype, quiet=True)
    two_threads = in_one_process(planned, data, background=True)
    one_process = in_one_process(planned, data, background=False)
    del data
    source = DataSource(args.data_dir, _mirrors(args.mirror), args.offline)
    sweeps = [on_cluster(planned, n, source) for n in args.workers]
    per_run = one_process / len(planned)
    base = next((s for s in sweeps if s["workers"] == 1), sweeps[0])
    rows = [["one process, fit() after fit(), measuring on a 2nd thread (as train does)", f"{two_threads:.1f}",
             f"{60 * len(planned) / two_threads:.1f}", f"{two_threads / len(planned):.2f}", "-", "-"],
            ["one process, fit() after fit(), on one core (as a worker does)", f"{one_process:.1f}",
             f"{60 * len(planned) / one_process:.1f}", f"{per_run:.2f}", "-", "-"]]
    for s in sweeps:
        overhead = (s["seconds"] - one_process) / len(planned)
        rows.append([f"sweep, {s['workers']} worker(s)", f"{s['seconds']:.1f} (wall {s['wall_seconds']:.1f})",
                     f"{s['runs_per_minute']:.1f}",
                     f"{s['median_run_on_worker']:.2f} (slowest {s['first_run_on_worker']:.2f})",
                     f"{base['seconds'] / s['seconds']:.2f}x",
                     f"{overhead:+.2f} s ({100 * overhead / per_run:+.1f}%)" if s["workers"] == 1 else "-"])
    print(header(f"Sweep: {len(planned)} runs of {args.epochs} epochs", 1))
    print(markdown_table(["how", "seconds", "runs/min", "one run, median s", "speed-up vs 1 worker",
                          "overhead per run vs one process"],
                         rows))
    fastest = min(sweeps, key=lambda s: s["seconds"])
    print(f"\none run in one process: {per_run:.2f} s on one core, {two_threads / len(planned):.2f} s measuring on a "
          f"second thread; the fastest sweep ({fastest['workers']} workers) against the train command's way: "
          f"{two_threads / fastest['seconds']:.2f}x. The machine may be shared: repeat and compare rows of one run")
    if args.json:
        from mnist_nn.fileio import write_text

        write_text(args.json, json.dumps({"runs": len(planned), "epochs": args.epochs,
                                          "one_process_seconds": round(one_process, 3),
                                          "one_process_two_threads_seconds": round(two_threads, 3), "sweeps": sweeps},
                                         indent=1))
    if args.plot:
        plot(rows, args.plot, f"{len(planned)} runs of {args.epochs} epochs")
    return 0


def plot(rows: list[list[str]], path, title: str) -> None:
    from mnist_nn.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(8, 3.2))
    fig.subplots_adjust(left=0.42, right=0.97, bottom=0.17, top=0.88)
    labels, rates = [r[0].split(" (as")[0].replace("one process, fit() after fit(), ", "one process, ") for r in rows], \
        [float(r[2]) for r in rows]
    ax.barh(labels[::-1], rates[::-1], color="tab:blue")
    ax.set(xlabel="runs per minute (more is better)", title=title)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    finish(run_command(main, prog="benchmarks/bench_sweep.py"))
