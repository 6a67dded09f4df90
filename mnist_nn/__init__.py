"""mnist_nn: the classic MNIST network, written from scratch and made fast.

    >>> from mnist_nn import load_mnist, Network
    >>> data = load_mnist()
    >>> net = Network((784, 30, 10), seed=0)
    >>> net.sgd(data.train.images, data.train.labels, epochs=30)

The heavy modules (Numba, matplotlib) are imported only when they are used.
"""

__version__ = "0.1.0"

from mnist_nn.data import MnistFormatError, load_mnist  # noqa: E402
from mnist_nn.network import ModelFileError, Network  # noqa: E402

__all__ = ["__version__", "load_mnist", "MnistFormatError", "Network", "ModelFileError"]
