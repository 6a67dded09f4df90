"""The models the playground serves: every run folder under ``--runs``, each named by an ID the server
makes from the folder's name (``20260101-120000``, or ``sweep/lr-0.5`` one level down). A client names
a model only by such an ID, never by a path: an ID is looked up among the folders found, so nothing
outside ``--runs`` can be reached, whatever a request says.

Loading is :func:`mnist_nn.evaluate.load_model` (``Network.load``: bounded, never pickle, and checked to
fit MNIST); a loaded network is kept until its ``model.npz`` changes (a run still training replaces it
after every epoch).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from mnist_nn.errors import MnistNNError
from mnist_nn.evaluate import load_model, scores_of
from mnist_nn.network import Network

ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?")
MAX_RUNS = 5000  # folders listed; a runs/ folder past this is not a playground's
MODEL_FILE = "model.npz"


class UnknownModel(MnistNNError):
    """The ID names no model the server lists."""


@dataclass
class Loaded:
    network: Network
    stamp: tuple  # model.npz's (inode, size, mtime): a new checkpoint is a new file


def _entries(folder: Path):
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


class Models:
    """The run folders under ``runs`` and their networks, loaded on first use."""

    def __init__(self, runs: Path):
        self.runs = Path(runs)
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def folders(self) -> dict[str, Path]:
        """ID -> run folder: the folders under ``runs`` holding a model.npz, and those one level further
        down (a sweep's); symbolic links (``runs/latest``) are skipped, they name a folder listed anyway."""
        found: dict[str, Path] = {}
        for entry in _entries(self.runs):
            if entry.is_symlink() or not entry.is_dir() or not ID.fullmatch(entry.name):
                continue
            path = Path(entry.path)
            if (path / MODEL_FILE).is_file():
                found[entry.name] = path
                continue
            for inner in _entries(path):
                if (not inner.is_symlink() and inner.is_dir() and ID.fullmatch(inner.name)
                        and (Path(inner.path) / MODEL_FILE).is_file()):
                    found[f"{entry.name}/{inner.name}"] = Path(inner.path)
            if len(found) >= MAX_RUNS:
                break
        return found

    def folder(self, model_id) -> Path:
        """The folder of the model ``model_id`` names; :class:`UnknownModel` when it names none.

        Found by the rules of :meth:`folders` without listing them all (this runs on every prediction):
        the ID's pattern admits no ``..``, no leading ``/`` and at most two parts, and no part may be a link."""
        if not isinstance(model_id, str) or not ID.fullmatch(model_id):
            raise UnknownModel(f"model must be one of the IDs GET /api/models lists, got {str(model_id)[:80]!r}")
        parts = model_id.split("/")
        path, listed = self.runs, True
        for i, part in enumerate(parts):
            path = path / part
            if path.is_symlink() or not path.is_dir():
                listed = False
                break
            if i < len(parts) - 1 and (path / MODEL_FILE).is_file():
                listed = False  # a run folder's own subfolders are not runs
                break
        if not listed or not (path / MODEL_FILE).is_file():
            raise UnknownModel(f"no model {model_id!r} under {self.runs}; GET /api/models lists them")
        return path

    def network(self, model_id) -> tuple[Network, tuple]:
        """The network of ``model_id`` and the stamp of its file (which changes with every checkpoint)."""
        path = self.folder(model_id) / MODEL_FILE
        try:
            info = path.stat()
        except OSError:
            raise UnknownModel(f"the model {model_id!r} was removed; GET /api/models lists those there are") from None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            loaded = self._loaded.get(model_id)
        if loaded is None or loaded.stamp != stamp:
            loaded = Loaded(load_model(path), stamp)  # ModelFileError says what is wrong with the file
            with self._lock:
                self._loaded[model_id] = loaded
        return loaded.network, loaded.stamp

    def listing(self) -> dict:
        """``{"models": [...], "skipped": [...]}``: each model described, and the folders whose model
        file could not be used, with the reason."""
        models, skipped = [], []
        for model_id in self.folders():
            try:
                net, _ = self.network(model_id)
            except MnistNNError as exc:
                skipped.append({"id": model_id, "error": str(exc)})
                continue
            models.append(describe(model_id, net))
        return {"runs": str(self.runs), "models": models, "skipped": skipped}


def describe(model_id: str, net: Network) -> dict:
    key, meaning = scores_of(net)
    meta = net.metadata
    return {"id": model_id, "test_accuracy": _number(meta.get("test_accuracy")),
            "validation_accuracy": _number(meta.get("validation_accuracy")), "epochs": net.epochs_trained,
            "sizes": list(net.sizes), "activation": net.activation.name, "cost": net.cost_function.name,
            "score": key, "score_meaning": meaning}


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
