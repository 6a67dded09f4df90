"""Classify your own digits: ``python -m mnist_nn.predict MODEL IMAGE [IMAGE ...]``.

A photo or drawing is made to look like MNIST the way the data set itself was made: grayscale, ink
bright on a dark background (light backgrounds are inverted automatically), cropped to the ink,
scaled so the digit fits a 20x20 box keeping its aspect ratio, and placed in a 28x28 image so that
its centre of mass is at the centre.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mnist_nn.cli import ArgumentParser, finish
from mnist_nn.network import ModelFileError, Network

INK_LEVEL = 0.2  # after stretching to [0, 1], pixels above this count as ink when cropping


class ImageError(ValueError):
    """An input image that cannot be read or holds no digit."""


def load_grayscale(path) -> np.ndarray:
    """The image at ``path`` as a float array in [0, 1] (PNG, JPEG, anything Pillow reads)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Transparent pixels are background: composite onto white before going gray.
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image.convert("RGBA"))
            return np.asarray(image.convert("L"), dtype=np.float64) / 255
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"not a readable image ({exc.__class__.__name__})") from None


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Turn a grayscale image into a 28x28 MNIST-style digit in [0, 1], ink bright on dark."""
    from PIL import Image

    def border(image):
        return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])

    if np.median(border(gray)) > 0.5:  # dark ink on a light background: invert
        gray = 1 - gray
    background, top = np.median(border(gray)), gray.max()
    if top - background < 0.1:
        raise ImageError("no ink found (the image is blank or has no contrast)")
    ink = np.clip((gray - background) / (top - background), 0, 1)
    rows, cols = np.nonzero(ink > INK_LEVEL)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # Fit the longer side to 20 pixels, keeping the aspect ratio (as MNIST did).
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float64) / 255
    # Place it so the centre of mass lands on the centre of the 28x28 canvas.
    total = small.sum()
    rows_idx, cols_idx = np.indices(small.shape)
    centre_row, centre_col = (rows_idx * small).sum() / total, (cols_idx * small).sum() / total
    top_row = int(np.clip(round(14 - centre_row), 0, 28 - small.shape[0]))
    left_col = int(np.clip(round(14 - centre_col), 0, 28 - small.shape[1]))
    canvas = np.zeros((28, 28))
    canvas[top_row:top_row + small.shape[0], left_col:left_col + small.shape[1]] = small
    return np.clip(canvas, 0, 1)


def classify(net: Network, digit: np.ndarray, top: int = 3) -> dict:
    probabilities = net.probabilities(digit.reshape(1, -1))[0]
    best = np.argsort(-probabilities, kind="stable")[:top]
    return {"prediction": int(best[0]),
            "top": [{"digit": int(d), "probability": float(probabilities[d])} for d in best]}


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mnist_nn.predict",
                            description="Classify images of handwritten digits (PNG, JPEG, any size) with a "
                                        "trained model. Each image is grayscaled, inverted if its background is "
                                        "light, cropped to the ink, scaled into a 20x20 box and centred by mass "
                                        "in 28x28, as MNIST was made.")
    parser.add_argument("model", metavar="MODEL", help="a model.npz file or a run folder from mnist_nn.train")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files to classify")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    parser.add_argument("--show-input", metavar="DIR", help="save the 28x28 image the model saw for each file "
                                                            "into DIR (as <name>.28x28.png)")
    args = parser.parse_args(argv)
    try:
        net = Network.load(args.model)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.json and net.cost_function.name == "quadratic":
        print("(probabilities: softmax of the output layer's weighted inputs; this quadratic-cost model "
              "has sigmoid outputs that are scores, not probabilities)")
    failures = 0
    for name in args.images:
        try:
            digit = to_mnist(load_grayscale(name))
        except ImageError as exc:
            failures += 1
            print(f"error: {name}: {exc}", file=sys.stderr)
            continue
        result = classify(net, digit)
        if args.show_input:
            from PIL import Image

            folder = Path(args.show_input)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digit * 255).round().astype(np.uint8)).save(folder / f"{Path(name).stem}.28x28.png")
        if args.json:
            print(json.dumps({"file": name, **result}))
        else:
            top = ", ".join(f"{t['digit']} {100 * t['probability']:.1f}%" for t in result["top"])
            print(f"{name}: {result['prediction']}   ({top})")
    return 1 if failures else 0


if __name__ == "__main__":
    finish(main())
