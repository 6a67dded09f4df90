"""Train a network on MNIST: ``python -m mnist_nn.train --epochs 30``.

Reads top to bottom like the recipe: parse flags, load the data, build the network, train it while
reporting test accuracy every epoch and checkpointing the model and its history, then plot.
Every default is the classic setup (784-30-10 sigmoid, quadratic cost, N(0, 1) init, mini-batch 10,
eta 3.0, 30 epochs, 50k/10k train/validation split) on the fast jit backend.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

# NumPy asks Linux for 2 MB pages for large arrays; where the kernel then compacts memory on the spot
# (transparent_hugepage/defrag "madvise", as on the machine in the README) that made loading and
# preparing MNIST 0.3-0.5 s slower per run, and the epochs no faster. This process's choice only;
# set NUMPY_MADVISE_HUGEPAGE=1 to override. (It must be set before NumPy is imported.)
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

import numpy as np  # noqa: E402

from mnist_nn import __version__  # noqa: E402
from mnist_nn.backends import BACKENDS  # noqa: E402
from mnist_nn.cli import ArgumentParser, finish  # noqa: E402
from mnist_nn.data import TRAIN_SIZE, MnistError, load_mnist  # noqa: E402
from mnist_nn.fileio import write_text  # noqa: E402
from mnist_nn.functions import ACTIVATIONS, COSTS  # noqa: E402
from mnist_nn.network import DTYPES, INITS, ModelFileError, Network  # noqa: E402

# The classic setup. Flags override these; a resumed run takes them from its history instead.
DEFAULTS = dict(epochs=30, batch_size=10, lr=3.0, hidden=[30], activation="sigmoid", cost="quadratic",
                init="normal", l2=0.0, seed=None, backend="jit", dtype="float32", validation_size=10_000)
# What defines a run's arithmetic: fixed once the run exists (a resume may not change them).
RUN_SETTINGS = ("batch_size", "lr", "hidden", "activation", "cost", "init", "l2", "seed", "dtype",
                "validation_size")


class UsageError(Exception):
    """A bad flag or a flag that conflicts with the run being resumed (exit status 2)."""


class DivergedError(Exception):
    """Training produced NaN or inf."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m mnist_nn.train",
        description="Train the MNIST network by mini-batch SGD and report test accuracy after every epoch. "
                    "Writes model.npz, history.json and learning_curve.png to the output folder, "
                    "checkpointed after every epoch. Ctrl-C stops cleanly; --resume continues.")
    d = DEFAULTS
    p.add_argument("--epochs", type=int, help=f"epochs to train (with --resume: epochs to add) [default {d['epochs']}]")
    p.add_argument("--batch-size", type=int, help=f"mini-batch size [default {d['batch_size']}]")
    p.add_argument("--lr", "--eta", dest="lr", type=float, help=f"learning rate eta [default {d['lr']}]")
    p.add_argument("--hidden", type=int, nargs="+", metavar="N",
                   help="hidden layer sizes, e.g. --hidden 100 30 [default 30]")
    p.add_argument("--activation", choices=list(ACTIVATIONS), help=f"hidden activation [default {d['activation']}]")
    p.add_argument("--cost", choices=list(COSTS),
                   help="quadratic (sigmoid outputs) or cross-entropy (softmax outputs) [default quadratic]")
    p.add_argument("--init", choices=INITS,
                   help="normal: weights N(0,1); scaled: weights N(0,1/n_in); biases N(0,1) [default normal]")
    p.add_argument("--l2", type=float, help="L2 weight decay lambda (network2.py convention) [default 0]")
    p.add_argument("--seed", type=int, help="seed for initialisation and shuffling [default: a random seed, "
                                            "recorded in history.json]")
    p.add_argument("--backend", choices=BACKENDS, help="implementation of the training epoch [default jit]")
    p.add_argument("--dtype", choices=DTYPES, help="precision of parameters and arithmetic [default float32]")
    p.add_argument("--validation-size", type=int,
                   help="last N training images held out for validation; 0 trains on all 60,000 [default 10000]")
    p.add_argument("--data-dir", help="MNIST cache folder [default: $MNIST_NN_DATA or ~/.cache/mnist_nn]")
    p.add_argument("--mirror", action="append", help="download mirror tried first (repeatable) [default: built-in list]")
    p.add_argument("--offline", action="store_true", default=None, help="never download; the data must be cached")
    p.add_argument("--out", help="output folder [default runs/<YYYYmmdd-HHMMSS>]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR for --epochs more epochs")
    p.add_argument("--quiet", action="store_true", help="only the final summary; no progress bars")
    p.add_argument("--no-plot", action="store_true", help="do not write learning_curve.png")
    return p


# --------------------------------------------------------------------------- settings

def resolve_settings(args: argparse.Namespace) -> tuple[dict, list[dict], Path]:
    """Merge defaults, flags and (with --resume) the saved run into one settings dict.

    Returns (settings, previous epoch records, output folder).
    """
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    previous: list[dict] = []
    if args.resume:
        out = Path(args.resume)
        try:
            history = json.loads((out / "history.json").read_text())
            saved, previous = history["settings"], history["epochs"]
        except (OSError, ValueError, KeyError):
            raise UsageError(f"--resume {out}: no readable history.json there; give a folder written by mnist_nn.train")
        for key in RUN_SETTINGS:
            if key in given and given[key] != saved[key]:
                raise UsageError(f"--resume: the run was trained with {key}={saved[key]!r}; "
                                 f"drop --{key.replace('_', '-')} or start a new run")
        if args.out and Path(args.out) != out:
            raise UsageError("--resume writes into the run's own folder; drop --out")
        settings = {**saved, **{k: v for k, v in given.items() if k not in RUN_SETTINGS}}
        settings["epochs"] = given.get("epochs", DEFAULTS["epochs"])
    else:
        settings = {**DEFAULTS, **given}
        if settings["seed"] is None:
            settings["seed"] = secrets.randbelow(2**31)
        out = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    check_settings(settings)
    return settings, previous, out


def check_settings(s: dict) -> None:
    if s["epochs"] < 1:
        raise UsageError(f"--epochs must be at least 1, got {s['epochs']}")
    if not s["lr"] > 0:
        raise UsageError(f"--lr must be positive, got {s['lr']}")
    if s["l2"] < 0:
        raise UsageError(f"--l2 must be zero or positive, got {s['l2']}")
    if min(s["hidden"]) < 1:
        raise UsageError(f"--hidden sizes must be at least 1, got {' '.join(map(str, s['hidden']))}")
    if not 0 <= s["validation_size"] < TRAIN_SIZE:
        raise UsageError(f"--validation-size must be between 0 and {TRAIN_SIZE - 1}, got {s['validation_size']}")
    n_train = TRAIN_SIZE - s["validation_size"]
    if not 1 <= s["batch_size"] <= n_train:
        raise UsageError(f"--batch-size must be between 1 and the training set size {n_train}, got {s['batch_size']}")


def prepare_out(out: Path) -> None:
    """Create the output folder and prove it is writable before any work is done."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / ".write-test", "")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror}); choose another folder")


# --------------------------------------------------------------------------- the run

def versions() -> dict:
    import numba

    return {"mnist_nn": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "machine": platform.machine()}


def save_checkpoint(net: Network, settings: dict, records: list[dict], out: Path) -> None:
    """model.npz then history.json, each atomically: the pair always describes a completed epoch."""
    last = records[-1] if records else {}
    net.metadata = {"training": {k: settings[k] for k in RUN_SETTINGS + ("backend",)},
                    "test_accuracy": last.get("test_accuracy"),
                    "validation_accuracy": last.get("validation_accuracy")}
    net.save(out / "model.npz")
    history = {"settings": settings, "seed": settings["seed"], "versions": versions(), "epochs": records}
    write_text(out / "history.json", json.dumps(history, indent=1))


def divergence(net: Network, cost: float, accuracy: float, start_weight: float) -> str | None:
    """Why training has diverged, or None.

    NaN or inf anywhere is divergence. So is the quieter failure of a stable network at a huge
    learning rate: the weights blow up, every unit saturates, and accuracy falls to chance level.
    """
    if not np.isfinite(cost) or not all(np.isfinite(p).all() for p in net.weights + net.biases):
        return "the cost or the weights became NaN/inf"
    largest = max(float(np.abs(w).max()) for w in net.weights)
    if accuracy <= 1.5 / net.sizes[-1] and largest > 10 * start_weight:
        return (f"the weights blew up (largest |w| {largest:.3g}, was {start_weight:.3g}) and test accuracy "
                f"fell to chance level ({100 * accuracy:.2f}%)")
    return None


def train(settings: dict, previous: list[dict], out: Path, data, quiet: bool = False, plot: bool = True) -> int:
    """Run the training described by ``settings`` and return the process exit status."""
    dtype = np.dtype(settings["dtype"])
    if previous:
        try:
            net = Network.load(out / "model.npz")
        except ModelFileError as exc:
            raise UsageError(f"--resume: {exc}")
    else:
        sizes = (784, *settings["hidden"], 10)
        net = Network(sizes, settings["activation"], settings["cost"], settings["init"], settings["seed"], dtype)
    train_x, train_y = data.train
    if settings["batch_size"] > len(train_y):
        raise UsageError(f"--batch-size {settings['batch_size']} is larger than the training set ({len(train_y)})")
    has_validation = len(data.validation.labels) > 0
    records = list(previous)
    first_epoch = len(records) + 1
    total = len(records) + settings["epochs"]
    n_batches = -(-len(train_y) // settings["batch_size"])
    say = (lambda *a: None) if quiet else print
    say(f"{net}  backend={settings['backend']}  seed={settings['seed']}  "
        f"{len(train_y)} training images, batch {settings['batch_size']}, lr {settings['lr']}, l2 {settings['l2']}")

    bar = None
    if not quiet and sys.stdout.isatty():
        from tqdm.auto import tqdm
        bar = tqdm(total=n_batches, unit="batch", leave=False, desc=f"Epoch {first_epoch}/{total}")
        say = bar.write  # lines above the bar, not through it
    start_weight = max(float(np.abs(w).max()) for w in net.weights)
    # Each epoch is measured and checkpointed on the other core while the next one trains: the jit
    # kernels release the GIL, and the measuring (about two thirds of an epoch's time) then costs nothing.
    # It works on a snapshot of the network, so the next epoch may change the weights freely.
    # The measuring thread's first jobs: prepare the three data sets for it and import matplotlib
    # (about 0.4 s), while the training data are prepared and the first epochs run.
    measuring = ThreadPoolExecutor(max_workers=1)
    measure = {}
    pending = [measuring.submit(lambda: measure.update(
        train=net.evaluator(train_x, train_y),  # the training data's sparse copy is shared with the training
        test=net.evaluator(*data.test),
        validation=net.evaluator(*data.validation) if has_validation else None))]
    if plot:
        pending.append(measuring.submit(importlib.import_module, "mnist_nn.plots"))
    diverged = threading.Event()

    def measure_and_save(epoch: int, snapshot: Network, seconds: float) -> None:
        if diverged.is_set():
            return  # an epoch trained after the divergence was seen: not a good checkpoint
        with np.errstate(all="ignore"):
            cost, _ = measure["train"](settings["l2"], snapshot)
            correct = int(np.sum(measure["test"](0.0, snapshot)[1] == data.test.labels))
            val = (float(np.mean(measure["validation"](0.0, snapshot)[1] == data.validation.labels))
                   if has_validation else None)
        why = divergence(snapshot, cost, correct / len(data.test.labels), start_weight)
        if why:
            diverged.set()
            raise DivergedError(f"training diverged in epoch {epoch}: {why}")
        records.append({"epoch": epoch, "test_accuracy": correct / len(data.test.labels),
                        "validation_accuracy": val, "train_cost": cost, "seconds": round(seconds, 4)})
        save_checkpoint(snapshot, settings, records, out)
        line = (f"Epoch {epoch}/{total}  test {correct}/{len(data.test.labels)} "
                f"({100 * correct / len(data.test.labels):.2f}%)")
        if val is not None:
            line += f"  val {100 * val:.2f}%"
        say(line + f"  cost {cost:.4f}  {seconds:.2f} s")

    started = time.perf_counter()
    epoch_start = [started]

    prepared = [0.0]

    def before_first_epoch():
        epoch_start[0] = time.perf_counter()  # epoch 1's time is the epoch's, not the preparation's
        prepared[0] = epoch_start[0] - started

    def after_epoch(epoch: int, net: Network):
        seconds = time.perf_counter() - epoch_start[0]
        if diverged.is_set():
            return False
        pending.append(measuring.submit(measure_and_save, epoch, copy.deepcopy(net), seconds))
        if bar is not None:
            bar.reset()
            bar.set_description(f"Epoch {epoch + 1}/{total}")
        epoch_start[0] = time.perf_counter()

    def finish_measuring() -> DivergedError | None:
        """Wait for the epochs still being measured; the divergence one of them found, if any."""
        measuring.shutdown(wait=True)
        for future in pending:
            if isinstance(future.exception(), DivergedError):
                return future.exception()
            future.result()  # anything else is a bug: let it surface
        return None

    try:
        net.sgd(train_x, train_y, settings["epochs"], settings["batch_size"], settings["lr"], settings["l2"],
                backend=settings["backend"], on_epoch=after_epoch, on_start=before_first_epoch,
                on_batches=bar.update if bar is not None else None)
    except KeyboardInterrupt:
        finish_measuring()
        if bar is not None:
            bar.close()
        done = len(records)
        print(f"\ninterrupted: the checkpoint after epoch {done} is in {out}; continue with "
              f"`python -m mnist_nn.train --resume {out} --epochs {max(total - done, 1)}`", file=sys.stderr)
        return 130
    problem = finish_measuring()
    if bar is not None:
        bar.close()
    if problem is not None:
        kept = f"the checkpoint after epoch {len(records)} is kept in {out}" if records else "no epoch completed"
        print(f"error: {problem}; try a smaller --lr (now {settings['lr']}); {kept}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started - prepared[0]

    best = max(records, key=lambda r: r["test_accuracy"])
    final = records[-1]
    written = ["model.npz", "history.json"]
    if plot:
        from mnist_nn.plots import learning_curves

        learning_curves([records], [f"{net.sizes} lr {settings['lr']}"], out / "learning_curve.png")
        written.append("learning_curve.png")
    print(f"best epoch {best['epoch']}: test {100 * best['test_accuracy']:.2f}%   "
          f"final (epoch {final['epoch']}): test {100 * final['test_accuracy']:.2f}%"
          + (f", val {100 * final['validation_accuracy']:.2f}%" if has_validation else ""))
    print(f"trained {settings['epochs']} epochs in {elapsed:.1f} s (after {prepared[0]:.1f} s preparing the data and "
          f"kernels); wrote {', '.join(written)} to {out}")
    return 0


def warm_up_jit_in_background(dtype) -> None:
    """Numba's one-time start-up (about 0.4 s of Python) on a daemon thread, while the data load (mostly
    file reading and NumPy, which release the GIL)."""

    def work():
        from mnist_nn.backends import jit

        jit.warm_up(dtype)

    threading.Thread(target=work, daemon=True).start()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings, previous, out = resolve_settings(args)
        prepare_out(out)
        if settings["backend"] == "jit":
            warm_up_jit_in_background(np.dtype(settings["dtype"]))
        data = load_mnist(args.data_dir, settings["validation_size"], dtype=np.dtype(settings["dtype"]),
                          mirrors=args.mirror, quiet=args.quiet, offline=args.offline)
        return train(settings, previous, out, data, quiet=args.quiet, plot=not args.no_plot)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except MnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    finish(main())
