"""What the Explore tab shows for a model: :func:`mnist_nn.evaluate.evaluate` on the test set (accuracy,
confusion matrix, the most confident mistakes), the test images behind a confusion-matrix cell, and the
learning curve from the run's ``history.json``.

The test set is loaded once, on the first request that needs it, with the server's data flags
(``--data-dir``, ``--mirror``, ``--offline``); an evaluation is kept until the model file changes.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import numpy as np

from mnist_nn import runfolder
from mnist_nn.errors import MnistNNError, UsageError
from mnist_nn.evaluate import evaluate
from mnist_nn.serve.models import Models

MISTAKES = 24  # the most confident mistakes shown
CELL_IMAGES = 60  # test images shown for one confusion-matrix cell


def pixels_b64(image: np.ndarray) -> str:
    """A 28x28 image in [0, 1] as base64 of 784 bytes (0..255), row by row: a twentieth of the JSON."""
    return base64.b64encode((np.asarray(image).reshape(-1) * 255).round().astype(np.uint8).tobytes()).decode()


class Explorer:
    """Evaluations of the models in ``models`` on the test split that ``load_test()`` returns."""

    def __init__(self, models: Models, load_test):
        self.models, self._load_test = models, load_test
        self._test = None
        self._results: dict[str, tuple[tuple, dict, np.ndarray]] = {}
        self._lock = threading.Lock()

    def test_split(self):
        with self._lock:
            if self._test is None:
                self._test = self._load_test()
            return self._test

    def _evaluated(self, model_id: str) -> tuple[dict, np.ndarray]:
        net, stamp = self.models.network(model_id)
        with self._lock:
            kept = self._results.get(model_id)
        if kept is not None and kept[0] == stamp:
            return kept[1], kept[2]
        images, labels = self.test_split()
        result = evaluate(net, images, labels, MISTAKES)
        predicted = net.predict(images)
        with self._lock:
            self._results[model_id] = (stamp, result, predicted)
        return result, predicted

    def evaluation(self, model_id: str) -> dict:
        """Test accuracy, per-digit numbers, the confusion matrix, the mistakes (with their pictures) and
        the learning curve."""
        result, _ = self._evaluated(model_id)
        images, _ = self.test_split()
        mistakes = [{**m, "pixels": pixels_b64(images[m["index"]])} for m in result["most_confident_mistakes"]]
        return {"model": model_id, "split": "test", **{k: v for k, v in result.items() if k != "wrong_indices"},
                "most_confident_mistakes": mistakes, "errors": len(result["wrong_indices"]),
                "learning_curve": learning_curve(self.models.folder(model_id))}

    def cell(self, model_id: str, true: int, predicted: int) -> dict:
        """The test images of digit ``true`` the model predicted as ``predicted`` (the first ones)."""
        n_classes = len(self._evaluated(model_id)[0]["confusion_matrix"])
        for name, value in (("true", true), ("predicted", predicted)):
            if not 0 <= value < n_classes:
                raise UsageError(f"{name} must be a digit 0 to {n_classes - 1}, got {value}")
        _, predictions = self._evaluated(model_id)
        images, labels = self.test_split()
        where = np.flatnonzero((labels == true) & (predictions == predicted))
        return {"model": model_id, "true": true, "predicted": predicted, "count": int(len(where)),
                "images": [{"index": int(i), "pixels": pixels_b64(images[i])} for i in where[:CELL_IMAGES]]}


def learning_curve(folder: Path) -> dict:
    """The run's epoch records (``history.json``, checked as ``--resume`` checks it); empty with the
    reason when the folder's history cannot be read."""
    try:
        saved = runfolder.load(folder)
    except MnistNNError as exc:
        return {"epochs": [], "problem": str(exc)}
    keep = ("epoch", "test_accuracy", "validation_accuracy", "train_accuracy", "train_cost", "seconds")
    return {"epochs": [{k: r.get(k) for k in keep} for r in saved.records],
            "settings": saved.settings.to_dict()}
