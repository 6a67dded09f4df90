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

__version__ = "0.1.0"

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
