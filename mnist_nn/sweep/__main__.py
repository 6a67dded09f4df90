"""``python -m mnist_nn.sweep``: every combination of the given training settings, times the seeds,
on a Dask LocalCluster or an existing Dask cluster; results, run folders and a summary in --out.

    python -m mnist_nn.sweep --seeds 0-4 --hidden 30 100 --lr 0.5 3.0 --cost cross-entropy --out sweeps/first

Parses the flags into a plan (:mod:`mnist_nn.sweep.grid`), hands it to :func:`mnist_nn.sweep.run_sweep`,
prints a line per finished run (and a tqdm bar on a terminal) and the summary table.
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import sys
from pathlib import Path

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # as the train command does (see mnist_nn/train.py)

from mnist_nn import cli  # noqa: E402
from mnist_nn.cli import ArgumentParser, int_at_least  # noqa: E402
from mnist_nn.errors import UsageError  # noqa: E402
from mnist_nn.settings import Settings  # noqa: E402
from mnist_nn.sweep import grid  # noqa: E402

PROG = "python -m mnist_nn.sweep"
SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://[^\s/]+:\d+/?$")


def build_parser(flags: list[grid.Flag]) -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Train every combination of the given training settings for every seed, on Dask: a local "
                    "cluster of worker processes, or an existing cluster (--scheduler). Each finished run is "
                    "appended to OUT/results.jsonl and written to OUT/runs/<run_id>/ (model.npz, best.npz, "
                    "history.json, as python -m mnist_nn.train writes them); at the end OUT/summary.md, "
                    "summary.json and summary.png give per setting the median, min and max over seeds. The same "
                    "command again skips the runs already done; Ctrl-C stops cleanly. Needs pip install "
                    "\".[sweep]\". Exit status: 0 when every run is done or failed by itself (bad settings, "
                    "divergence: recorded), 1 when some could not be run (rerun to retry them), 2 for a bad flag.")
    grid.add_training_flags(p, flags)
    g = p.add_argument_group("the sweep")
    g.add_argument("--seeds", nargs="+", type=grid.parse_seeds, metavar="SEEDS",
                   help="seeds to run every setting with: 0-4, 0,3,7 or 0-2,9 [default 0]")
    g.add_argument("--grid", metavar="FILE",
                   help="a TOML or JSON file of flag name -> list of values (and seeds = \"0-4\"); flags given "
                        "on the command line replace the file's")
    g.add_argument("--out", metavar="DIR", help="the sweep folder (required unless --dry-run): new, or one a "
                                                "sweep wrote (its finished runs are skipped, new ones added)")
    g.add_argument("--dry-run", action="store_true", help="print the runs the sweep would do and their count, "
                                                           "and run nothing")
    g.add_argument("--workers", type=int_at_least(1), metavar="N",
                   help=f"worker processes of the local cluster, one thread each [default: the cores, "
                        f"{os.cpu_count()} here]")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="submit to an existing Dask cluster (started with `dask scheduler` and `dask worker`) "
                        "instead of starting a local one; workers need mnist_nn and the data, not a shared disk")
    g.add_argument("--retries", type=int_at_least(0), metavar="N",
                   help="tries more for a run that raises on a worker (a dead worker's runs are always "
                        "rescheduled) [default 2]")
    g.add_argument("--quiet", action="store_true", help="only the summary: no line per run, no progress bar")
    cli.add_data_flags(p)
    for action in p._actions:  # the data flags describe the workers' view
        if action.dest == "data_dir":
            action.help = "MNIST cache folder as the workers see it " + action.help.split("folder ", 1)[1]
    return p


def make_plan(args, flags: list[grid.Flag]) -> tuple[list[grid.PlannedRun], list[str]]:
    values, file_seeds = grid.read_grid_file(args.grid, flags) if args.grid else ({}, None)
    for flag in flags:
        given = getattr(args, flag.dest, None)
        if given is not None:
            values[flag.dest] = given or [True]  # an on/off flag given alone means on
    seeds = [s for part in args.seeds for s in part] if args.seeds else file_seeds or [Settings().seed]
    seeds = list(dict.fromkeys(seeds))
    swept = [f.dest for f in flags if len(values.get(f.dest, ())) > 1]
    return grid.plan(values, seeds, flags), swept


def main(argv=None) -> int:
    return cli.run_command(_main, argv, prog=PROG)


def _main(argv=None) -> int:
    flags = grid.training_flags()
    args = build_parser(flags).parse_args(argv)
    if args.scheduler and args.workers:
        raise UsageError("--workers sizes the local cluster; a --scheduler's cluster has the workers started for "
                         "it: drop --workers")
    if args.scheduler and not SCHEDULER_ADDRESS.match(args.scheduler):
        raise UsageError(f"--scheduler {args.scheduler!r} is not a scheduler address; give one such as "
                         f"tcp://127.0.0.1:8786 (what `dask scheduler` prints)")
    planned, swept = make_plan(args, flags)
    if args.dry_run:
        return dry_run(planned, swept, args.out)
    if not args.out:
        raise UsageError("--out is required: the folder for results.jsonl, the run folders and the summary "
                         "(the same --out again continues the sweep)")
    from mnist_nn.sweep import DataSource, run_sweep

    source = DataSource(args.data_dir, _mirrors(args.mirror), args.offline)
    progress = Progress(swept, args.quiet)
    try:
        outcome = run_sweep(planned, args.out, source=source, scheduler=args.scheduler, workers=args.workers,
                            on_start=progress.start, on_result=progress.result, retries=args.retries)
    except KeyboardInterrupt as exc:
        cli.ignore_interrupts()
        progress.close()
        outcome = getattr(exc, "outcome", None)
        what = "interrupted" if cli.interrupt_status(exc) == 130 else "terminated"
        if outcome is not None:
            left = outcome.planned - outcome.skipped - len(outcome.done)
            print(f"\n{what}: {outcome.skipped + len(outcome.done)} of {outcome.planned} runs are done and kept in "
                  f"{outcome.folder} (summary written); {left} to go: continue with `{continue_command(argv)}`",
                  file=sys.stderr)
        else:
            print(f"\n{what}", file=sys.stderr)
        return cli.interrupt_status(exc)
    progress.close()
    return report(outcome)


def _mirrors(given) -> tuple[str, ...] | None:
    """--mirror values, repeatable or comma-separated, as the train command reads them."""
    if not given:
        return None
    return tuple(m.strip() for item in given for m in item.split(",") if m.strip())


def continue_command(argv) -> str:
    return " ".join([PROG, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def dry_run(planned, swept: list[str], out) -> int:
    done = set()
    if out:
        from mnist_nn.sweep import results

        if os.path.isdir(out):
            existing, _ = results.read(Path(out))
            done = results.done_keys(existing)
    for run in planned:
        state = "done " if run.key in done else "bad  " if run.problem else "to do"
        label = f"{grid.describe(run.settings, swept)}  " if swept else ""
        print(f"{state}  {run.run_id}  {label}seed {run.settings.seed}"
              + (f"  ({run.problem})" if run.problem else ""))
    todo = sum(run.key not in done for run in planned)
    print(f"{len(planned)} runs" + (f", {len(planned) - todo} already done in {out}, {todo} to do" if done else ""))
    return 0


def report(outcome) -> int:
    from mnist_nn.sweep import summary

    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    print(summary.markdown(outcome.summary), end="")
    errors = [r for r in outcome.done if r["status"] == "error"]
    failed = [r for r in outcome.done if r["status"] == "failed"]
    print(f"{len(outcome.done)} runs done now ({len(failed)} failed, {len(errors)} could not run), "
          f"{outcome.skipped} were done before; wrote results.jsonl, runs/ and {', '.join(outcome.written)} "
          f"to {outcome.folder}")
    if errors:
        print(f"error: {len(errors)} runs could not be run (first: {errors[0]['error']}); run the same command "
              f"again to retry them", file=sys.stderr)
        return 1
    return 0


class Progress:
    """A line per finished run, and a tqdm bar over runs with the best median so far (on a terminal)."""

    def __init__(self, swept: list[str], quiet: bool):
        self.swept, self.quiet, self.bar = swept, quiet, None
        self.validation: dict[str, list[float]] = {}  # setting -> final validation accuracies
        self.count, self.total = 0, 0

    def start(self, todo, existing) -> None:
        self.total = len(todo)
        for record in existing:
            self._add(record)
        if not self.quiet:
            print(f"{self.total} runs to do" + (f" ({len(existing)} results already in the folder)" if existing
                                                   else ""), flush=True)
        if not self.quiet and sys.stderr.isatty() and self.total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit="run")

    def _add(self, record: dict) -> None:
        if record["status"] == "ok" and record.get("final_validation_accuracy") is not None:
            from mnist_nn.sweep.summary import setting_key

            self.validation.setdefault(setting_key(record["settings"]), []).append(record["final_validation_accuracy"])

    def best_median(self) -> float | None:
        medians = [statistics.median(v) for v in self.validation.values()]
        return max(medians) if medians else None

    def result(self, record: dict, folder) -> None:
        self.count += 1
        self._add(record)
        if not self.quiet:
            self.say(self.line(record))
        if self.bar is not None:
            best = self.best_median()
            if best is not None:
                self.bar.set_postfix_str(f"best median val {100 * best:.2f}%")
            self.bar.update(1)

    def line(self, r: dict) -> str:
        from mnist_nn.sweep.summary import SettingsView

        settings = SettingsView(r["settings"])  # a failed run's settings may be ones no run can use
        label = f"{grid.describe(settings, self.swept)}  " if self.swept else ""
        what = f"[{self.count}/{self.total}] {label}seed {r['seed']}"
        if r["status"] != "ok":
            return f"{what}: {r['status'].upper()}: {r['error']}"
        val = r["final_validation_accuracy"]
        stuck = f"  stuck digits {','.join(map(str, r['stuck_digits']))}" if r.get("stuck_digits") else ""
        return (f"{what}: test {100 * r['final_test_accuracy']:.2f}%"
                + (f"  val {100 * val:.2f}%" if val is not None else "")
                + f"  (best epoch {r['best_epoch']})  {r['seconds']:.1f} s on {r['worker']}{stuck}")

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    cli.finish(main())
