"""mnist_nn: the classic MNIST network, written from scratch and made fast.

    >>> from mnist_nn import fit, Settings
    >>> run = fit(Settings(epochs=30))              # a whole run: the data, every epoch measured
    >>> run.final["test_accuracy"], run.network     # (0.95..., Network(...))

    >>> from mnist_nn import load_mnist, Network   # or the pieces
    >>> data = load_mnist()
    >>> net = Network((784, 30, 10), seed=0)
    >>> net.sgd(data.train.images, data.train.labels, epochs=30)

Names are imported on first use (PEP 562), so ``python -m mnist_nn.data`` and friends start fast
and Numba is loaded only by the jit backend.
"""

import os as _os
import signal as _signal
import sys as _sys

__version__ = "0.1.0"


def _interrupted_while_starting(signum, frame):
    _sys.stderr.write("\ninterrupted\n")
    _os._exit(130)  # nothing is written yet: no clean-up to run, and no traceback of half-done imports


# ``python -m mnist_nn.<command>`` imports this package first, with sys.argv[0] still "-m": a Ctrl-C
# during the imports that follow is one line and exit 130 too, until the command's own handling
# (mnist_nn.cli.run_command) takes over. An ignored SIGINT stays ignored; a library import changes nothing.
if _sys.argv[:1] == ["-m"] and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)

_EXPORTS = {
    "load_mnist": "mnist_nn.data",
    "Network": "mnist_nn.network",
    "Settings": "mnist_nn.settings",
    "fit": "mnist_nn.fitting",
    "resume": "mnist_nn.fitting",
    "Run": "mnist_nn.fitting",
    "MnistNNError": "mnist_nn.errors",
    "MnistError": "mnist_nn.errors",
    "MnistFormatError": "mnist_nn.errors",
    "ModelFileError": "mnist_nn.errors",
    "ImageError": "mnist_nn.errors",
    "RunFolderError": "mnist_nn.errors",
    "UsageError": "mnist_nn.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mnist_nn' has no attribute {name!r}")
