"""Check a trained model: ``python -m mnist_nn.evaluate MODEL [--split test] [--plots DIR] [--json]``.

Prints the accuracy on a split, precision/recall/F1 for each digit, the confusion matrix and the
mistakes the model was most sure of; ``--plots`` draws them, ``--json`` gives the numbers to scripts.
MODEL is a run folder (its ``model.npz``; ``runs/latest`` works), a ``model.npz`` or a ``best.npz``.

The scores are what the model's output layer gives: softmax probabilities for a cross-entropy model,
and for a quadratic-cost model its sigmoid outputs, each in 0..1, which are not probabilities.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from mnist_nn import cli
from mnist_nn.errors import MnistError, ModelFileError, OutputError, UsageError
from mnist_nn.modelfile import check_model_fits
from mnist_nn.network import Network

PROG = "python -m mnist_nn.evaluate"
SPLITS = ("test", "validation", "train")
TRAIN_IMAGES = 60_000


# --------------------------------------------------------------------------- shared with predict

def load_model(path) -> Network:
    """The model in ``path`` (a run folder, ``runs/latest``, a ``model.npz`` or ``best.npz``), checked to fit
    MNIST: 784 inputs, 10 outputs (finite weights: :meth:`Network.load` sees to that). Raises
    :class:`ModelFileError` naming what does not fit."""
    net = Network.load(path)
    check_model_fits(net, path)
    return net


def scores_of(net: Network) -> tuple[str, str]:
    """(the key the scores go under, a sentence saying what they are) for ``net``'s output layer."""
    if net.cost_function.name == "cross-entropy":
        return "probability", "softmax probabilities of the output layer, which sum to 1"
    return "output", ("sigmoid outputs of this quadratic-cost model, each in 0..1: not probabilities, "
                      "and they need not sum to 1")


def output_folder(text: str, flag: str) -> tuple[Path, bool]:
    """The folder ``text`` given to ``flag``, created if missing and checked to be writable *before* any
    work is done; returns it and whether it was created. Raises :class:`OutputError`."""
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {text}: is a file, not a folder; give a folder (it is created if missing)")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{flag} {text}: cannot write there ({exc.strerror or exc}); "
                          f"give a folder you can write") from None
    return folder, created


def remove_if_empty(folder: Path) -> None:
    """Take back a folder this command created and then did not write into."""
    try:
        folder.rmdir()
    except OSError:
        pass


# --------------------------------------------------------------------------- the numbers

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
    """Every number the report shows, as plain Python values.

    The mistakes are ordered by the score of the predicted digit (see :func:`scores_of`), ties (a float32
    sigmoid is exactly 1.0 for z > 17) broken by the weighted input z behind it.
    """
    z = net.output_z(images)
    scores = net.cost_function.output(z)
    predicted = z.argmax(axis=1)
    matrix = confusion(labels, predicted, net.sizes[-1])
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.lexsort((-z[wrong, predicted[wrong]], -scores[wrong, predicted[wrong]]))][:n_mistakes]
    key, meaning = scores_of(net)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "correct": int(np.sum(predicted == labels)),
        "total": int(len(labels)),
        "per_class": per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "score": key,
        "score_meaning": meaning,
        "most_confident_mistakes": [{"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
                                     key: float(scores[i, predicted[i]])} for i in order],
        "wrong_indices": wrong.tolist(),
    }


def report(result: dict, split: str, model) -> str:
    lines = [f"{model}: {split} accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/{result['total']})",
             "", "digit  precision  recall     F1  support"]
    for row in result["per_class"]:
        lines.append(f"{row['digit']:5d}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  "
                     f"{row['support']:7d}")
    matrix = np.array(result["confusion_matrix"])
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "      " + "".join(f"{p:6d}" for p in range(len(matrix)))]
    lines += [f"{t:6d}" + "".join(f"{c:6d}" for c in row) for t, row in enumerate(matrix)]
    key = result["score"]
    heading = "probability" if key == "probability" else "output"
    lines += ["", f"most confident mistakes ({key}: the {result['score_meaning']})",
              f"  index  true  predicted  {heading:>11}"]
    lines += [f"{m['index']:7d}  {m['true']:4d}  {m['predicted']:9d}  {m[key]:11.4f}"
              for m in result["most_confident_mistakes"]]
    return "\n".join(lines)


def write_plots(net: Network, images, labels, result: dict, folder: Path, split: str) -> tuple[list[Path], list[str]]:
    """confusion_matrix.png, misclassified.png and hidden_weights.png in ``folder``; returns the files and
    notes for the user. Raises :class:`OutputError` when a file cannot be written."""
    from mnist_nn import plots

    wrong = result["wrong_indices"][:40]
    predicted = net.predict(images[wrong]) if wrong else []
    hidden = len(net.weights[0])
    notes = []
    if hidden > plots.MAX_HIDDEN_PICTURES:
        notes.append(f"hidden_weights.png shows the first {plots.MAX_HIDDEN_PICTURES} of the model's {hidden} "
                     f"hidden units")
    try:
        return [
            plots.confusion_matrix(result["confusion_matrix"], folder / "confusion_matrix.png",
                                   title=f"Confusion matrix, {split} split ({100 * result['accuracy']:.2f}%)"),
            plots.digit_grid(images[wrong], [f"{t} -> {p}" for t, p in zip(labels[wrong], predicted)],
                             folder / "misclassified.png",
                             suptitle=f"Misclassified {split} digits (true -> predicted)"),
            plots.hidden_weights(net.weights[0], folder / "hidden_weights.png"),
        ], notes
    except OSError as exc:
        raise OutputError(f"--plots {folder}: cannot write the plots ({exc.strerror or exc})") from None


def _validation_size(net: Network, model, split: str) -> int:
    """The validation split the model was trained with; the test split does not depend on it (0 then)."""
    if split == "test":
        return 0
    training = net.metadata.get("training", {})
    value = training.get("validation_size", 10_000) if isinstance(training, dict) else training
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < TRAIN_IMAGES:
        return value
    raise ModelFileError(f"{model}: the model's metadata has no usable training.validation_size ({value!r}), so "
                         f"its {split} split is unknown; use --split test")


def _load_data(args, validation_size: int, dtype):
    from mnist_nn import data

    try:
        return cli.load_data(args, validation_size, dtype=dtype, quiet=True)
    except data.MnistError as exc:  # data.py's own class, until it raises errors.MnistError
        if isinstance(exc, MnistError):
            raise
        raise MnistError(str(exc)) from None


def main(argv=None) -> int:
    """The command; errors become one line and an exit status (see :func:`mnist_nn.cli.run_command`)."""
    return cli.run_command(_main, argv, prog=PROG)


def _main(argv) -> int:
    parser = cli.ArgumentParser(prog=PROG,
                                description="Evaluate a trained model on an MNIST split: accuracy, per-digit "
                                            "precision/recall/F1, confusion matrix and the most confident mistakes.")
    parser.add_argument("model", metavar="MODEL",
                        help="a run folder from mnist_nn.train (its model.npz; runs/latest works), or a model.npz "
                             "or best.npz file")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="which images to score; validation/train follow the model's own split (default test)")
    parser.add_argument("--plots", metavar="DIR", help="write confusion_matrix.png, misclassified.png and "
                                                       "hidden_weights.png into DIR")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON object instead of text")
    parser.add_argument("--mistakes", type=cli.int_at_least(0), default=10, metavar="N",
                        help="how many confident mistakes to list (default 10)")
    cli.add_data_flags(parser)
    args = parser.parse_args(argv)
    net = load_model(args.model)
    validation_size = _validation_size(net, args.model, args.split)
    folder, created = output_folder(args.plots, "--plots") if args.plots else (None, False)
    try:
        data = _load_data(args, validation_size, net.dtype)
        images, labels = getattr(data, args.split)
        if len(labels) == 0:
            raise UsageError(f"--split validation: {args.model} was trained with validation_size=0, so there is "
                             f"no validation split; use --split test")
        result = evaluate(net, images, labels, args.mistakes)
        written, notes = write_plots(net, images, labels, result, folder, args.split) if folder else ([], [])
    finally:
        if created:
            remove_if_empty(folder)
    if args.json:
        extra = {"plots": [str(p) for p in written], "notes": notes} if folder else {}
        print(json.dumps({"model": str(args.model), "split": args.split, **result, **extra}, allow_nan=False))
    else:
        print(report(result, args.split, args.model))
        if written:
            print("\nwrote " + ", ".join(str(p) for p in written))
        for note in notes:
            print(f"note: {note}")
    return 0


if __name__ == "__main__":
    cli.finish(main())
