"""A model file's metadata (its JSON record) checked field by field before anything it declares is read.

The sizes it declares decide how much memory loading the model takes, so they are bounded here
(:data:`MAX_PARAMETERS`); every other field must have the type and range a model written by mnist_nn
has. :mod:`mnist_nn.modelfile` calls :func:`_check_metadata` once the (small, shallow) record is parsed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mnist_nn.errors import ModelFileError
from mnist_nn.settings import (ACTIVATION_NAMES, BACKEND_NAMES, COST_NAMES, DTYPE_NAMES, INIT_NAMES,
                               OPTIMIZER_NAMES, SCHEDULE_NAMES, TRAIN_IMAGES)

MODEL_FORMAT = "mnist_nn.model"
FORMAT_VERSION = 1
# About the most a 24 GiB machine can train: a 784-1,000,000-10 network has 795M parameters, 3.0 GiB
# as float32, and training keeps about six copies of them (settings.memory_needed): 18 GiB.
MAX_PARAMETERS = 800_000_000
MAX_SIZES = 32  # layers, input included; training allows 18 (16 hidden layers)
MAX_METADATA_DEPTH = 16  # a genuine model's metadata nests 4 deep (rng_state.state.state)
FIX = "give a model file written by mnist_nn (a run folder's model.npz or best.npz)"



def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_METADATA_DEPTH:
                stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _check_metadata(meta: dict, path: Path) -> dict:
    """``meta`` with defaults for what older files lack, every value checked; refuses what is odd."""

    def bad(key: str, problem: str):
        raise ModelFileError(f"{path}: the model's metadata {key} {problem}; the file is damaged or was not "
                             f"written by mnist_nn: {FIX}")

    version = meta.get("format_version", 0)
    if not _is_int(version) or version < 0:
        bad("format_version", f"must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version} is newer than this mnist_nn understands "
                             f"({FORMAT_VERSION}); upgrade mnist_nn")
    sizes = meta.get("sizes")
    if (not isinstance(sizes, list) or not 2 <= len(sizes) <= MAX_SIZES
            or not all(_is_int(s) and 1 <= s <= MAX_PARAMETERS for s in sizes)):
        bad("sizes", f"must be 2 to {MAX_SIZES} whole numbers of at least 1, got {_short(sizes)}")
    meta.setdefault("init", "normal")  # older files lack it
    for key, choices in (("activation", ACTIVATION_NAMES), ("cost", COST_NAMES), ("init", INIT_NAMES),
                         ("dtype", DTYPE_NAMES)):
        if meta.get(key) not in choices:
            bad(key, f"must be one of {', '.join(choices)}, got {_short(meta.get(key))}")
    parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    if parameters > MAX_PARAMETERS:
        itemsize = np.dtype(meta["dtype"]).itemsize
        raise ModelFileError(
            f"{path}: the metadata's sizes {_dashed(sizes)} make {parameters:,} parameters, "
            f"{parameters * itemsize / 2**30:.1f} GiB as {meta['dtype']} (about {6 * parameters * itemsize / 2**30:.0f} "
            f"GiB to train); mnist_nn loads at most {MAX_PARAMETERS:,} ({MAX_PARAMETERS * itemsize / 2**30:.1f} GiB), "
            f"about the most a 24 GiB machine can train; the file is damaged or not an mnist_nn model")
    seed = meta.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**128):
        bad("seed", f"must be empty or a whole number from 0 to 2^128 - 1, got {_short(seed)}")
    epochs = meta.setdefault("epochs_trained", 0)
    if not _is_int(epochs) or not 0 <= epochs < 2**63:
        bad("epochs_trained", f"must be a whole number of zero or more, got {_short(epochs)}")
    if "rng_state" in meta:
        generator = np.random.PCG64()
        try:
            if not isinstance(meta["rng_state"], dict) or meta["rng_state"].get("bit_generator") != "PCG64":
                raise ValueError
            generator.state = meta["rng_state"]
        except (TypeError, ValueError, KeyError, OverflowError, AttributeError):
            bad("rng_state", "is not the state of a PCG64 generator (numpy's default_rng)")
    for key in ("test_accuracy", "validation_accuracy"):
        value = meta.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            bad(key, f"must be empty or a number from 0 to 1, got {_short(value)}")
    if "training" in meta:
        _check_training(meta["training"], bad)
    if not isinstance(meta.setdefault("batch_norm", False), bool):  # older files lack it
        bad("batch_norm", f"must be true or false, got {_short(meta['batch_norm'])}")
    if "optimizer" in meta:
        _check_optimizer(meta["optimizer"], bad)
    return meta


def _check_optimizer(saved, bad) -> None:
    """The update rule a model was trained with and the state it saved (``Network.to_metadata``)."""
    from mnist_nn.optimizers import OPTIMIZER_NAMES, SLOTS

    if not isinstance(saved, dict) or saved.get("name") not in OPTIMIZER_NAMES:
        bad("optimizer", f"must name one of {', '.join(OPTIMIZER_NAMES)}, got {_short(saved)}")
    for key in ("momentum", "rho", "beta1", "beta2", "eps"):
        value = saved.get(key)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            bad(f"optimizer.{key}", f"must be a finite number of zero or more, got {_short(value)}")
    step = saved.get("step")
    if not _is_int(step) or not 0 <= step < 2**63:
        bad("optimizer.step", f"must be a whole number of zero or more, got {_short(step)}")
    slots = saved.get("slots")
    if not isinstance(slots, list) or slots not in ([], list(SLOTS[saved["name"]])):
        bad("optimizer.slots", f"must be [] or {list(SLOTS[saved['name']])} for {saved['name']}, got {_short(slots)}")


def _check_training(training, bad) -> None:
    """The settings a run folder's model carries (``runfolder.save``): each present one must be sane."""
    if not isinstance(training, dict):
        bad("training", f"must be a JSON object, got {_short(training)}")
    ranges = {"validation_size": (0, TRAIN_IMAGES - 1), "batch_size": (1, TRAIN_IMAGES), "seed": (0, 2**63 - 1),
              "epochs": (0, 2**63 - 1)}
    for key, (low, high) in ranges.items():
        value = training.get(key, low)
        if not _is_int(value) or not low <= value <= high:
            bad(f"training.{key}", f"must be a whole number from {low} to {high}, got {_short(value)}")
    for key in ("lr", "l2"):
        value = training.get(key, 0.0)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            bad(f"training.{key}", f"must be a finite number of zero or more, got {_short(value)}")
    hidden = training.get("hidden", [1])
    if not isinstance(hidden, list) or not all(_is_int(h) and h >= 1 for h in hidden):
        bad("training.hidden", f"must be a list of whole numbers of at least 1, got {_short(hidden)}")
    for key, choices in (("activation", ACTIVATION_NAMES), ("cost", COST_NAMES), ("init", INIT_NAMES),
                         ("dtype", DTYPE_NAMES), ("backend", BACKEND_NAMES), ("optimizer", OPTIMIZER_NAMES),
                         ("lr_schedule", SCHEDULE_NAMES)):
        if key in training and training[key] not in choices:
            bad(f"training.{key}", f"must be one of {', '.join(choices)}, got {_short(training[key])}")


def _dashed(sizes) -> str:
    return "-".join(map(str, sizes))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
