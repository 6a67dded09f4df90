"""mnist_nn: the classic MNIST network, written from scratch and made fast.

    >>> from mnist_nn import load_mnist, Network
    >>> data = load_mnist()
    >>> net = Network((784, 30, 10), seed=0)
    >>> net.sgd(data.train.images, data.train.labels, epochs=30)

Names are imported on first use (PEP 562), so ``python -m mnist_nn.data`` and friends start fast
and Numba is loaded only by the jit backend.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_mnist": "mnist_nn.data",
    "MnistFormatError": "mnist_nn.data",
    "MnistError": "mnist_nn.data",
    "Network": "mnist_nn.network",
    "ModelFileError": "mnist_nn.network",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mnist_nn' has no attribute {name!r}")
