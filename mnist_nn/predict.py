"""Classify your own digits: ``python -m mnist_nn.predict MODEL IMAGE|FOLDER [...]``.

Each image is made to look like MNIST (see :mod:`mnist_nn.images`: grayscale, inverted if its
background is light, cropped to the ink, scaled into a 20x20 box, centred by mass in 28x28) and
classified. A folder stands for every image file in it, sorted by name. The scores shown are what the
model's output layer gives: softmax probabilities for a cross-entropy model, sigmoid outputs in 0..1
(not probabilities) for a quadratic-cost one. ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from mnist_nn import cli
from mnist_nn.errors import ImageError, OutputError
from mnist_nn.evaluate import load_model, output_folder, remove_if_empty, scores_of
from mnist_nn.fileio import atomic_write
from mnist_nn.images import EXTENSIONS, FORMAT_NAMES, MAX_PIXELS, image_files, load_grayscale, read_digit, to_mnist
from mnist_nn.network import Network

__all__ = ["ImageError", "classify", "load_grayscale", "main", "read_digit", "to_mnist"]

PROG = "python -m mnist_nn.predict"


def classify(net: Network, digit: np.ndarray, top: int = 3) -> dict:
    """The predicted digit and the ``top`` best scores, under the key :func:`scores_of` names
    (``probability`` or ``output``), ordered by the output layer's weighted input z."""
    x = np.asarray(digit).reshape(1, -1)
    z = net.output_z(x)
    scores = net.cost_function.output(z)[0]
    best = np.argsort(-z[0], kind="stable")[:top]
    key, _ = scores_of(net)
    return {"prediction": int(best[0]), "top": [{"digit": int(d), key: float(scores[d])} for d in best]}


def _expand(names: list[str]) -> list[tuple[str, str | None]]:
    """(image name, None) for each file to classify, folders expanded; (name, error) for a folder without
    images, so that it is reported in its place."""
    items = []
    for name in names:
        if os.path.isdir(name):
            try:
                files = image_files(name)
            except ImageError as exc:
                items.append((name, str(exc)))
                continue
            if not files:
                items.append((name, f"a folder without image files ({', '.join(EXTENSIONS)})"))
            items.extend((str(path), None) for path in files)
        else:
            items.append((name, None))
    return items


def _show(folder: Path, name: str, digit: np.ndarray) -> None:
    from PIL import Image

    path = folder / f"{Path(name).stem}.28x28.png"
    try:
        with atomic_write(path) as (f, _):
            Image.fromarray((digit * 255).round().astype(np.uint8)).save(f, format="PNG")
    except OSError as exc:
        raise OutputError(f"--show-input {folder}: cannot write {path.name} ({exc.strerror or exc})") from None


def main(argv=None) -> int:
    """The command; errors become one line and an exit status (see :func:`mnist_nn.cli.run_command`)."""
    return cli.run_command(_main, argv, prog=PROG)


def _main(argv) -> int:
    parser = cli.ArgumentParser(
        prog=PROG,
        description=f"Classify images of handwritten digits ({FORMAT_NAMES}, recognised by content; any size up "
                    f"to {MAX_PIXELS // 10**6} megapixels) with a trained model. Each image is grayscaled, inverted if its background "
                    f"is light, cropped to the ink, scaled into a 20x20 box and centred by mass in 28x28, as MNIST "
                    f"was made.")
    parser.add_argument("model", metavar="MODEL",
                        help="a run folder from mnist_nn.train (its model.npz; runs/latest works), or a model.npz "
                             "or best.npz file")
    parser.add_argument("images", metavar="IMAGE", nargs="+",
                        help="image files to classify; a folder means every image file in it, sorted by name")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image (JSON lines)")
    parser.add_argument("--show-input", metavar="DIR", help="save the 28x28 image the model saw for each file "
                                                            "into DIR (as <name>.28x28.png)")
    args = parser.parse_args(argv)
    net = load_model(args.model)
    folder, created = output_folder(args.show_input, "--show-input") if args.show_input else (None, False)
    key, meaning = scores_of(net)
    if not args.json:
        print(f"(scores: {meaning})")
    failures = 0
    try:
        for name, problem in _expand(args.images):
            notes = []
            try:
                if problem:
                    raise ImageError(problem)
                digit = read_digit(name, notes)
            except ImageError as exc:
                failures += 1
                print(f"error: {name}: {exc}", file=sys.stderr)
                continue
            result = classify(net, digit)
            if folder is not None:
                _show(folder, name, digit)
            if args.json:
                print(json.dumps({"file": name, **result, "score": key, **({"notes": notes} if notes else {})},
                                 allow_nan=False))
            else:
                if key == "probability":
                    top = ", ".join(f"{t['digit']} {100 * t[key]:.1f}%" for t in result["top"])
                else:
                    top = "outputs " + ", ".join(f"{t['digit']} {t[key]:.3f}" for t in result["top"])
                print(f"{name}: {result['prediction']}   ({top})")
                for note in notes:
                    print(f"note: {name}: {note}", file=sys.stderr)
    finally:
        if created:
            remove_if_empty(folder)
    return 1 if failures else 0


if __name__ == "__main__":
    cli.finish(main())
