"""Check a trained model: ``python -m mnist_nn.evaluate MODEL [--split test] [--plots DIR] [--json]``.

Prints the accuracy on a split, precision/recall/F1 for each digit, the confusion matrix and the
mistakes the model was most sure of; ``--plots`` draws them, ``--json`` gives the numbers to scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mnist_nn.cli import ArgumentParser, finish
from mnist_nn.data import MnistError, load_mnist
from mnist_nn.network import ModelFileError, Network

SPLITS = ("test", "validation", "train")


def confusion(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[t, p]: how many samples of class t were predicted as p."""
    return np.bincount(true.astype(np.int64) * n_classes + predicted, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def per_class(matrix: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    hits = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(actual > 0, hits / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return [{"digit": d, "precision": float(precision[d]), "recall": float(recall[d]), "f1": float(f1[d]),
             "support": int(actual[d])} for d in range(len(matrix))]


def evaluate(net: Network, images: np.ndarray, labels: np.ndarray, n_mistakes: int = 10) -> dict:
    """Every number the report shows, as plain Python values."""
    probabilities = net.probabilities(images)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion(labels, predicted, net.sizes[-1])
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:n_mistakes]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "correct": int(np.sum(predicted == labels)),
        "total": int(len(labels)),
        "per_class": per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "most_confident_mistakes": [{"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
                                     "probability": float(probabilities[i, predicted[i]])} for i in order],
        "wrong_indices": wrong.tolist(),
    }


def report(result: dict, split: str, model: Path) -> str:
    lines = [f"{model}: {split} accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/{result['total']})",
             "", "digit  precision  recall     F1  support"]
    for row in result["per_class"]:
        lines.append(f"{row['digit']:5d}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  "
                     f"{row['support']:7d}")
    matrix = np.array(result["confusion_matrix"])
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "      " + "".join(f"{p:6d}" for p in range(len(matrix)))]
    lines += [f"{t:6d}" + "".join(f"{c:6d}" for c in row) for t, row in enumerate(matrix)]
    lines += ["", "most confident mistakes", "  index  true  predicted  probability"]
    lines += [f"{m['index']:7d}  {m['true']:4d}  {m['predicted']:9d}  {m['probability']:11.4f}"
              for m in result["most_confident_mistakes"]]
    return "\n".join(lines)


def write_plots(net: Network, images, labels, result: dict, folder: Path, split: str) -> list[Path]:
    from mnist_nn import plots

    folder.mkdir(parents=True, exist_ok=True)
    wrong = result["wrong_indices"][:40]
    predicted = net.predict(images[wrong]) if wrong else []
    return [
        plots.confusion_matrix(result["confusion_matrix"], folder / "confusion_matrix.png",
                               title=f"Confusion matrix, {split} split ({100 * result['accuracy']:.2f}%)"),
        plots.digit_grid(images[wrong], [f"{t} -> {p}" for t, p in zip(labels[wrong], predicted)],
                         folder / "misclassified.png", suptitle=f"Misclassified {split} digits (true -> predicted)"),
        plots.hidden_weights(net.weights[0], folder / "hidden_weights.png"),
    ]


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mnist_nn.evaluate",
                            description="Evaluate a trained model on an MNIST split: accuracy, per-digit precision/"
                                        "recall/F1, confusion matrix and the most confident mistakes.")
    parser.add_argument("model", metavar="MODEL", help="a model.npz file or a run folder from mnist_nn.train")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="which images to score; validation/train follow the model's own split (default test)")
    parser.add_argument("--plots", metavar="DIR", help="write confusion_matrix.png, misclassified.png and "
                                                       "hidden_weights.png into DIR")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object instead of text")
    parser.add_argument("--mistakes", type=int, default=10, help="how many confident mistakes to list (default 10)")
    parser.add_argument("--data-dir", help="MNIST cache folder (default: $MNIST_NN_DATA or ~/.cache/mnist_nn)")
    parser.add_argument("--mirror", action="append", help="download mirror tried first, if the data is not cached")
    parser.add_argument("--offline", action="store_true", default=None, help="never download")
    args = parser.parse_args(argv)
    try:
        net = Network.load(args.model)
        validation_size = int(net.metadata.get("training", {}).get("validation_size", 10_000))
        data = load_mnist(args.data_dir, validation_size, dtype=net.dtype, mirrors=args.mirror, quiet=True,
                          offline=args.offline)
    except (ModelFileError, MnistError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    images, labels = getattr(data, args.split)
    if len(labels) == 0:
        print("error: the model was trained with validation_size=0, so there is no validation split; "
              "use --split test", file=sys.stderr)
        return 1
    result = evaluate(net, images, labels, args.mistakes)
    written = write_plots(net, images, labels, result, Path(args.plots), args.split) if args.plots else []
    if args.json:
        print(json.dumps({"model": str(args.model), "split": args.split, **result}))
    else:
        print(report(result, args.split, Path(args.model)))
        if written:
            print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    finish(main())
