"""What the Draw tab asks: a drawing in, the network's answer and its insides out.

The drawing arrives as a PNG (the canvas's) or as 784 pixels. Either way it is made into the 28x28
digit the network sees by :mod:`mnist_nn.images` exactly as ``python -m mnist_nn.predict`` does: a PNG
through :func:`~mnist_nn.images.read_digit` (the same format checks and size limits as a file), the
pixels through :func:`~mnist_nn.images.to_mnist` (they skip only the decoding). The forward pass is the
network's own (``predict.classify``), and the hidden layers' activations are the same layers computed by
the functions ``Network`` itself uses.
"""

from __future__ import annotations

import base64
import binascii
import math

import numpy as np

from mnist_nn.backends import vectorized
from mnist_nn.errors import ImageError, UsageError
from mnist_nn.evaluate import scores_of
from mnist_nn.images import MAX_FILE_BYTES, read_digit, to_mnist
from mnist_nn.network import Network
from mnist_nn.predict import classify

MAX_UNITS_SHOWN = 1024  # hidden activations sent per layer: a page cannot show more as separate cells


def digit_of(body: dict) -> tuple[np.ndarray, list[str]]:
    """The 28x28 digit (float32 in [0, 1]) a request's ``png`` or ``pixels`` makes, and any notes.
    Raises :class:`ImageError` or :class:`UsageError` saying what is wrong with the request."""
    has_png, has_pixels = "png" in body, "pixels" in body
    if has_png == has_pixels:
        raise UsageError('send exactly one of "png" (a base64 PNG) and "pixels" (784 numbers in 0..1)')
    notes: list[str] = []
    if has_png:
        return read_digit(_png_bytes(body["png"]), notes), notes
    return to_mnist(_pixels(body["pixels"])), notes


def _png_bytes(text) -> bytes:
    if not isinstance(text, str):
        raise UsageError('"png" must be a string: the image file as base64 (a data: URL works too)')
    if text.startswith("data:"):
        text = text.partition(",")[2]  # canvas.toDataURL() gives "data:image/png;base64,...."
    if len(text) > 4 * math.ceil(MAX_FILE_BYTES / 3):
        raise ImageError(f"the image is over the {MAX_FILE_BYTES // 2**20} MiB an image of a digit may be")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError('"png" is not valid base64') from None


def _pixels(values) -> np.ndarray:
    if not isinstance(values, list) or len(values) != 784:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise UsageError(f'"pixels" must be a list of 784 numbers (28x28, row by row), got {size}')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UsageError('"pixels" must hold numbers only')
    pixels = np.array(values, dtype=np.float64)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise UsageError('"pixels" must be numbers from 0 (black) to 1 (white)')
    return pixels.reshape(28, 28).astype(np.float32)


def answer(net: Network, digit: np.ndarray) -> dict:
    """The prediction, all ten scores (labelled as what they are), the input and each hidden layer."""
    key, meaning = scores_of(net)
    result = classify(net, digit, top=net.sizes[-1])
    outputs = [0.0] * net.sizes[-1]
    for entry in result["top"]:
        outputs[entry["digit"]] = entry[key]
    x = digit.reshape(1, -1).astype(net.dtype)
    # The layers Network.output_z computes, kept: with batch normalisation (net.bn), evaluated as the
    # network evaluates (running statistics); a network without it passes nothing more.
    bn = getattr(net, "bn", None)
    hidden = vectorized.hidden_forward(net.weights, net.biases, x, net.activation, *([bn] if bn else []))[1:]
    return {"digit": result["prediction"], "outputs": _rounded(np.array(outputs)), "score": key,
            "score_meaning": meaning, "input28": _rounded(digit.ravel()),
            "hidden": [_rounded(a[0, :MAX_UNITS_SHOWN]) for a in hidden],
            "hidden_sizes": list(net.sizes[1:-1]), "activation": net.activation.name}


def unit_weights(net: Network, unit) -> dict:
    """The first hidden layer's unit ``unit``: its 784 incoming weights (a 28x28 picture) and its bias."""
    n_hidden = net.sizes[1] if len(net.sizes) > 2 else 0
    if not 0 <= unit < n_hidden:
        raise UsageError(f"unit must be 0 to {n_hidden - 1}, got {unit}" if n_hidden else
                         "this model has no hidden layer")
    weights = net.weights[0][unit]
    return {"unit": unit, "weights": _rounded(weights), "bias": float(net.biases[0][unit]),
            "largest": float(np.abs(weights).max())}


def _rounded(values: np.ndarray) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), 5).tolist()
