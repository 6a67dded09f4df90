"""Train a network on MNIST: ``python -m mnist_nn.train --epochs 30``.

The command line of :func:`mnist_nn.fitting.fit`: parse the flags into a :class:`~mnist_nn.settings.Settings`,
hand it to ``fit`` (or ``resume``), print one line per epoch and a summary, draw the learning curve.
Every default is the classic setup (784-30-10 sigmoid, quadratic cost, N(0, 1) init, mini-batch 10,
lr 3.0, 30 epochs, seed 0, 50k/10k train/validation split) on the fast jit backend.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from pathlib import Path

# NumPy asks Linux for 2 MB pages for large arrays; where the kernel then compacts memory on the spot
# (transparent_hugepage/defrag "madvise", as on the machine in the README) that made loading and
# preparing MNIST 0.3-0.5 s slower per run, and the epochs no faster. This process's choice only;
# set NUMPY_MADVISE_HUGEPAGE=1 to override. (It must be set before NumPy is imported.)
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from mnist_nn import cli, runfolder  # noqa: E402  (light: NumPy and Numba are imported in _main)
from mnist_nn.cli import ArgumentParser, finite_float, int_at_least  # noqa: E402
from mnist_nn.errors import UsageError  # noqa: E402
from mnist_nn.settings import (ACTIVATION_NAMES, BACKEND_NAMES, COST_NAMES, DTYPE_NAMES, INIT_NAMES,  # noqa: E402
                               OPTIMIZER_NAMES, SCHEDULE_NAMES, Settings)

PROG = "python -m mnist_nn.train"
DEFAULTS = Settings()


def seed_flag(text: str) -> int | str:
    if text == "random":
        return text
    return int_at_least(0)(text)


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = ArgumentParser(
        prog=PROG,
        description="Train the MNIST network by mini-batch SGD and report test accuracy after every epoch. "
                    "Writes model.npz, best.npz (the epoch with the best validation accuracy), history.json and "
                    "learning_curve.png to the output folder, checkpointed after every epoch. Ctrl-C or SIGTERM "
                    "stops cleanly; --resume continues.")
    p.add_argument("--epochs", type=int_at_least(1),
                   help=f"epochs to train (with --resume: epochs to add) [default {d.epochs}]")
    p.add_argument("--batch-size", type=int_at_least(1), help=f"mini-batch size [default {d.batch_size}]")
    p.add_argument("--lr", type=finite_float, help=f"learning rate eta [default {d.lr}]")
    p.add_argument("--eta", dest="lr", type=finite_float, help=argparse.SUPPRESS)  # the old name, still read
    p.add_argument("--hidden", type=int_at_least(1), nargs="+", metavar="N",
                   help="hidden layer sizes, e.g. --hidden 100 30 [default 30]")
    p.add_argument("--activation", choices=ACTIVATION_NAMES, help=f"hidden activation [default {d.activation}]")
    p.add_argument("--cost", choices=COST_NAMES,
                   help="quadratic (sigmoid outputs) or cross-entropy (softmax outputs) [default quadratic]")
    p.add_argument("--init", choices=INIT_NAMES,
                   help="normal: weights N(0,1); scaled: weights N(0,1/n_in); biases N(0,1) [default normal]")
    p.add_argument("--l2", type=finite_float, help="L2 regularisation lambda: each step shrinks the weights by lr*l2/n, n the training-set size (Nielsen's network2.py) [default 0]")
    p.add_argument("--seed", type=seed_flag, metavar="N|random",
                   help="seed for initialisation and shuffling; 'random' draws one (recorded in history.json) "
                        f"[default {d.seed}]")
    p.add_argument("--backend", choices=BACKEND_NAMES, help="implementation of the training epoch [default jit]")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="precision of parameters and arithmetic [default float32]")
    p.add_argument("--validation-size", type=int_at_least(0),
                   help="last N training images held out for validation; 0 trains on all 60,000 [default 10000]")
    add_toolbox_flags(p)
    cli.add_data_flags(p)
    p.add_argument("--out", help="output folder, new or empty [default runs/<YYYYmmdd-HHMMSS>; runs/latest "
                                 "points at the newest]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (e.g. runs/latest) for "
                                                       "--epochs more epochs")
    p.add_argument("--quiet", action="store_true", help="only the header line and the final summary: no per-epoch lines, no progress bars")
    p.add_argument("--no-plot", action="store_true", help="do not write learning_curve.png")
    return p


def add_toolbox_flags(p: argparse.ArgumentParser) -> None:
    """The update rule, the schedule, the amount of data and early stopping (issue 14's training toolbox)."""
    d = DEFAULTS
    p.add_argument("--optimizer", choices=OPTIMIZER_NAMES,
                   help="update rule, as torch.optim's: sgd (w -= lr g), momentum (v = mu v + g; w -= lr v), rmsprop "
                        "(s = rho s + (1-rho) g^2; w -= lr g / (sqrt(s) + eps)), adam (bias-corrected, eps outside the "
                        "square root); --l2 adds (l2/n) w to each weight's gradient first [default sgd]")
    p.add_argument("--momentum", type=finite_float, help=f"mu of --optimizer momentum, 0 <= mu < 1 [default {d.momentum}]")
    p.add_argument("--rho", type=finite_float, help=f"RMSprop's decay of the mean square g^2 [default {d.rho}]")
    p.add_argument("--beta1", type=finite_float, help=f"Adam's decay of the mean gradient [default {d.beta1}]")
    p.add_argument("--beta2", type=finite_float, help=f"Adam's decay of the mean square g^2 [default {d.beta2}]")
    p.add_argument("--eps", type=finite_float, help=f"RMSprop's and Adam's term against dividing by zero [default {d.eps}]")
    p.add_argument("--lr-schedule", choices=SCHEDULE_NAMES,
                   help="learning rate per epoch: constant; step (lr * lr_gamma^(epoch // lr_step)); cosine (from lr "
                        "down towards 0 over --epochs: lr (1 + cos(pi epoch / epochs)) / 2) [default constant]")
    p.add_argument("--lr-step", type=int_at_least(1), help=f"epochs between steps of --lr-schedule step [default {d.lr_step}]")
    p.add_argument("--lr-gamma", type=finite_float, help=f"factor per step of --lr-schedule step [default {d.lr_gamma}]")
    p.add_argument("--batch-norm", action="store_true", default=None,
                   help="batch normalization of every hidden layer: z normalized over the mini-batch (mean, biased "
                        "variance, eps 1e-5), scaled by gamma and shifted by beta (learned, no L2), before the "
                        "activation; running mean and variance (momentum 0.1) for evaluation, as torch's BatchNorm1d")
    p.add_argument("--train-size", type=int_at_least(1), metavar="N",
                   help="train on the first N images of the training split only (validation and test sets unchanged) "
                        "[default all]")
    p.add_argument("--patience", type=int_at_least(1), metavar="K",
                   help="early stopping: stop when validation accuracy has not improved for K epochs; the network "
                        "returned and best.npz are then the best epoch's, model.npz the last epoch's (to --resume) "
                        "[default off]")


def given_settings(args: argparse.Namespace) -> dict:
    names = set(Settings.__dataclass_fields__)
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    return given


class Reporter:
    """The epoch lines, the progress bar and the warnings on the terminal."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None
        if not quiet and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=1, unit="batch", leave=False)

    def say(self, line: str, err: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr if err else sys.stdout)  # above the bar, not through it
        else:
            print(line, file=sys.stderr if err else sys.stdout, flush=True)

    def epoch_start(self, epoch: int, total: int) -> None:
        if self.bar is not None:
            self.bar.reset()
            self.bar.set_description(f"Epoch {epoch}/{total}")

    def batches(self, n_batches: int):
        if self.bar is None:
            return None
        self.bar.total = n_batches
        return self.bar.update

    def epoch_done(self, record: dict, run) -> None:
        for warning in record.get("warnings", ()):
            self.say(f"warning: {warning}", err=True)
        if self.quiet:
            return
        total = run.settings.epochs
        line = f"Epoch {record['epoch']}/{total}  test {100 * record['test_accuracy']:.2f}%"
        if record["validation_accuracy"] is not None:
            line += f"  val {100 * record['validation_accuracy']:.2f}%"
        lr = f"  lr {record['lr']:.4g}" if run.settings.lr_schedule != "constant" else ""
        self.say(line + f"  train {100 * record['train_accuracy']:.2f}%  cost {record['train_cost']:.4f}{lr}  "
                        f"{record['seconds']:.2f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def jit_cache_is_warm(pattern: str = "*.nbi") -> bool:
    """Whether Numba's on-disk cache holds compiled kernels (its index files, ``*.nbi``; ``pattern``:
    one kernel's), beside the sources or under $NUMBA_CACHE_DIR."""
    import mnist_nn.backends

    # Numba caches under $NUMBA_CACHE_DIR when it is set, and beside the sources otherwise.
    roots = [Path(os.environ["NUMBA_CACHE_DIR"])] if os.environ.get("NUMBA_CACHE_DIR") else \
        [Path(mnist_nn.backends.__file__).parent]
    return any(next(root.rglob(pattern), None) is not None for root in roots if root.is_dir())


ADAPTIVE_KERNEL = "*epoch_one_hidden_adaptive-*.nbi"  # the kernel of the optimizers and of batch norm


def warm_up_jit_in_background(dtype: str, deep: bool, adaptive: bool, report: Reporter) -> threading.Thread:
    """Numba's start-up (0.4 s of Python; ~6 s of compiling the first time, cached on disk after that)
    on a thread while the data load (mostly file reading and NumPy, which release the GIL)."""
    from mnist_nn.backends import jit

    cold = not jit_cache_is_warm()
    if cold or (adaptive and not jit_cache_is_warm(ADAPTIVE_KERNEL)):
        # Measured on the machine of the README: 5 s for plain SGD, 16 s more for the optimizers' and
        # batch norm's kernels (they are compiled only for a run that uses them).
        report.say(f"compiling the jit kernels, once (about {6 if not adaptive else 6 * cold + 16} s; cached on "
                   f"disk for later runs)", err=True)
        cold = True

    def work():
        started = time.perf_counter()
        jit.warm_up(dtype, deep, adaptive)  # every kernel the run uses, so the time said is the whole compile
        if cold:
            report.say(f"compiled the jit kernels in {time.perf_counter() - started:.1f} s", err=True)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def optimizer_words(s: Settings) -> str:
    extra = {"sgd": "", "momentum": f" (momentum {s.momentum})", "rmsprop": f" (rho {s.rho}, eps {s.eps})",
             "adam": f" (beta1 {s.beta1}, beta2 {s.beta2}, eps {s.eps})"}[s.optimizer]
    return f"optimizer {s.optimizer}{extra}"


def schedule_words(s: Settings) -> str:
    if s.lr_schedule == "step":
        return f" x {s.lr_gamma} every {s.lr_step} epochs"
    return " cosine to 0" if s.lr_schedule == "cosine" else ""


def summary(run, plotted: bool) -> list[str]:
    final, best = run.final, run.best
    s = run.settings
    lines = []
    val = f", val {100 * final['validation_accuracy']:.2f}%" if final["validation_accuracy"] is not None else ""
    chosen = "best validation" if final["validation_accuracy"] is not None else "best test"
    lines.append(f"{chosen} epoch {best['epoch']}: test {100 * best['test_accuracy']:.2f}%   "
                 f"final (epoch {final['epoch']}): test {100 * final['test_accuracy']:.2f}%{val}, "
                 f"train {100 * final['train_accuracy']:.2f}%")
    if run.stopped_early:
        stop = run.stopped_early
        lines.append(f"stopped early after epoch {stop['epoch']}: no better validation accuracy for {stop['patience']} "
                     f"epochs; best.npz (and the network fit() returns) is epoch {stop['best_epoch']}, model.npz epoch "
                     f"{stop['epoch']} (to --resume)")
    if final["validation_accuracy"] is not None:
        gap = final["train_accuracy"] - final["validation_accuracy"]
        lines.append(f"bias/variance: train {100 * final['train_accuracy']:.2f}% vs validation "
                     f"{100 * final['validation_accuracy']:.2f}%, train - validation gap {100 * gap:.2f} points"
                     + ("  (variance: the network fits the training images better than new ones)" if gap > 0.02
                        else "  (bias, if both are low: a bigger network or longer training helps more than data)"
                        if final["train_accuracy"] < 0.97 else ""))
    written = ["model.npz", "history.json"] + (["best.npz"] if final["validation_accuracy"] is not None else [])
    if plotted:
        written.append("learning_curve.png")
    lines.append(f"trained {run.epochs_this_call} epochs in {run.train_seconds:.1f} s (after "
                 f"{run.prepared_seconds:.1f} s preparing the data and kernels); wrote {', '.join(written)} "
                 f"to {run.folder}")
    if run.warnings:
        stuck = [str(w["digit"]) for w in run.warnings if "recovered_epoch" not in w]
        back = [f"{w['digit']} (from epoch {w['recovered_epoch']})" for w in run.warnings if "recovered_epoch" in w]
        lines.append("stuck digits (warnings in history.json): "
                     + (f"{', '.join(stuck)} never predicted at the end" if stuck else "none at the end")
                     + (f"; predicted again: {', '.join(back)}" if back else "")
                     + (f"; try another --seed than {s.seed}, or --cost cross-entropy --init scaled" if stuck else ""))
    return lines


def interrupted_message(run, status: int) -> str:
    what = "interrupted" if status == 130 else "terminated"
    if run is None or run.folder is None:
        return what
    if not run.records:
        return f"{what} before the first epoch finished; nothing was saved"
    done, total = len(run.records), run.settings.epochs
    if done >= total:
        return (f"{what} after the last epoch: the run is complete, {done} epochs in {run.folder} "
                f"(no learning curve drawn: python scripts/plot_history.py {run.folder}/history.json)")
    return (f"{what}: the checkpoint after epoch {done} is in {run.folder}; continue with "
            f"`{PROG} --resume {run.folder} --epochs {total - done}`")


def main(argv=None) -> int:
    """The command; errors become one line and an exit status (see :func:`mnist_nn.cli.run_command`)."""
    return cli.run_command(_main, argv, prog=PROG)


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mnist_nn import fitting

    given = given_settings(args)
    report = Reporter(args.quiet)
    run = folder = None
    try:
        if args.resume:
            folder = runfolder.resolve(args.resume)
            if args.out and Path(args.out).resolve() != folder:
                raise UsageError("--resume writes into the run's own folder; drop --out")
            saved = runfolder.load(folder)  # checked again, under the folder's lock, by resume()
            settings = saved.settings.replace(**{k: v for k, v in given.items() if k not in Settings.FIXED})
        else:
            if given.get("seed") == "random":
                given["seed"] = secrets.randbelow(2**31)
            settings = DEFAULTS.replace(**given).check()
            folder = runfolder.create(args.out)
        warming = (warm_up_jit_in_background(settings.dtype, len(settings.sizes) > 3,
                                              settings.optimizer != "sgd" or settings.batch_norm, report)
                   if settings.backend == "jit" else None)

        def load(s: Settings):
            data = cli.load_data(args, s.validation_size, s.dtype, quiet=args.quiet)
            n_train = len(data.train.labels)
            callbacks["on_batches"] = report.batches(-(-n_train // s.batch_size))
            if not args.resume:
                report.say(f"Network {'-'.join(map(str, s.sizes))}  activation {s.activation}  cost {s.cost}  "
                           f"init {s.init}  {s.dtype}  backend {s.backend}  seed {s.seed}  {min(n_train, s.training_images)} "
                           f"training images, batch {s.batch_size}, lr {s.lr}{schedule_words(s)}, l2 {s.l2}, "
                           f"{optimizer_words(s)}" + (f", patience {s.patience}" if s.patience else "")
                           + (", batch norm" if s.batch_norm else ""))
            return data

        callbacks = {"on_batches": None}

        def on_batches(k):
            if callbacks["on_batches"] is not None:
                callbacks["on_batches"](k)

        hooks = dict(on_epoch=report.epoch_done, on_epoch_start=report.epoch_start,
                     on_batches=on_batches if report.bar is not None else None)
        if args.resume:
            if saved.note:
                report.say(f"note: {saved.note}", err=True)
            run = fitting.resume(folder, given.get("epochs", DEFAULTS.epochs), load, changes=given, **hooks)
        else:
            run = fitting.fit(settings, load, out=folder, **hooks)
        if warming is not None:
            warming.join()  # its line, if any, before the summary
        plotted = False
        if not args.no_plot:
            from mnist_nn.plots import learning_curves

            try:
                learning_curves([run.records], [f"{'-'.join(map(str, run.settings.sizes))} lr {run.settings.lr}"],
                                run.folder / "learning_curve.png")
                plotted = True
            except OSError as exc:
                report.say(f"warning: could not write learning_curve.png ({exc.strerror or exc})", err=True)
        report.close()
        for line in summary(run, plotted):
            print(line)
        return 0
    except KeyboardInterrupt as exc:
        cli.ignore_interrupts()  # a second Ctrl-C while this says goodbye changes nothing
        if isinstance(folder, runfolder.RunFolder) and folder.path.is_dir():
            folder.discard_if_unused()  # interrupted before fit() took the new folder: leave no empty one
        report.close()
        status = cli.interrupt_status(exc)
        print(f"\n{interrupted_message(getattr(exc, 'run', run), status)}", file=sys.stderr)
        return status
    finally:
        report.close()


if __name__ == "__main__":
    cli.finish(main())
