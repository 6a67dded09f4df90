"""What every command line shares: the data flags, number checks, and the one place where an
exception becomes a line on stderr and an exit status.

Exit statuses: 0 success, 1 an error the user can act on, 2 a bad flag, 130 Ctrl-C (SIGINT),
143 SIGTERM. A closed pipe (``... | head``) ends the command quietly, as Unix tools do.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import signal
import sys
import threading

from mnist_nn.errors import MnistNNError, UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors printed as a single line that points at --help."""

    def error(self, message):
        fail(f"{self.prog}: error: {message} (see --help)", 2)


# --------------------------------------------------------------------------- flag types

def finite_float(text: str) -> float:
    """A float flag that refuses nan and inf (argparse turns the ValueError into one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(low: int):
    """An int flag type that refuses values below ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


# --------------------------------------------------------------------------- the data flags

def add_data_flags(parser: argparse.ArgumentParser, offline: bool = True) -> None:
    """--data-dir, --mirror and --offline, the same for every command that needs MNIST."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", metavar="DIR",
                       help="MNIST cache folder [default: $MNIST_NN_DATA, else $XDG_CACHE_HOME/mnist_nn, "
                            "else ~/.cache/mnist_nn]")
    group.add_argument("--mirror", action="append", metavar="URL",
                       help="download mirror tried first: an http(s):// or file:// URL or a folder "
                            "(repeatable, or separated by commas; also $MNIST_NN_MIRROR) [default: built-in list]")
    if offline:
        group.add_argument("--offline", action="store_true", default=None,
                           help="never download; the data must be cached (also MNIST_NN_OFFLINE=1)")


def load_data(args: argparse.Namespace, validation_size: int = 10_000, dtype="float32", quiet: bool = False):
    """``load_mnist`` with the data flags of ``args`` (see :func:`add_data_flags`)."""
    from mnist_nn.data import load_mnist

    return load_mnist(args.data_dir, validation_size, dtype=dtype, mirrors=args.mirror, quiet=quiet,
                      offline=getattr(args, "offline", None))


# --------------------------------------------------------------------------- the edge

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so one ``except KeyboardInterrupt`` handles both."""

    exit_status = 143


def _raise_terminated(signum, frame):
    raise Terminated()


def ignore_interrupts() -> None:
    """From here on the process only winds up: further Ctrl-Cs and SIGTERMs are ignored."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def interrupt_status(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return getattr(exc, "exit_status", 130)


def run_command(main, argv=None, prog: str | None = None) -> int:
    """Run ``main(argv)`` and turn whatever escapes it into one line on stderr and an exit status.

    SIGTERM is handled as Ctrl-C is (unless it is ignored, as a parent may ask). Output to a stream
    that cannot encode a file name (a strict-ASCII or strict-UTF-8 terminal) uses escapes instead of
    failing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    previous = {}
    if threading.current_thread() is threading.main_thread():
        import mnist_nn

        if signal.getsignal(signal.SIGINT) is mnist_nn._interrupted_while_starting:  # from here on: ours
            signal.signal(signal.SIGINT, signal.default_int_handler)
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        if previous[signal.SIGTERM] == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_terminated)
    prefix = f"{prog}: " if prog else ""
    try:
        return main(argv)
    except KeyboardInterrupt as exc:
        ignore_interrupts()
        print("\ninterrupted", file=sys.stderr)
        return interrupt_status(exc)
    except BrokenPipeError:
        return quiet_broken_pipe()
    except UsageError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr)
        return exc.exit_status
    except MnistNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    finally:
        for signum, handler in previous.items():  # as they were: a library caller's process is its own
            if handler is not None:
                signal.signal(signum, handler)


def quiet_broken_pipe() -> int:
    """The reader of stdout went away: point stdout at /dev/null so the final flush does not raise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1


def fail(message: str, status: int = 1):
    """Print ``message`` as one line on stderr and exit with ``status``."""
    print(message, file=sys.stderr)
    sys.exit(status)


def finish(status: int):
    """Exit with ``status``, skipping the interpreter's final garbage collection: it walks every object
    NumPy, Numba and matplotlib made (0.2-0.3 s here) only to free memory the OS takes back anyway."""
    ignore_interrupts()  # the process is ending: a late Ctrl-C must not turn the exit into a kill
    gc.freeze()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    sys.exit(status)
