"""What a training run is: one :class:`Settings`, the defaults in one place.

The command line, :func:`mnist_nn.fit`, ``history.json`` and the model file all use these names
(``lr``, not also ``eta``; ``l2``, not also ``lmbda``; the old names are still read from old files).
A run folder's settings are read back with :meth:`Settings.from_dict`, which checks every value's
type and range, so a tampered or truncated ``history.json`` is refused before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from mnist_nn.errors import UsageError

ACTIVATION_NAMES = ("sigmoid", "tanh", "relu")
COST_NAMES = ("quadratic", "cross-entropy")
INIT_NAMES = ("normal", "scaled")
DTYPE_NAMES = ("float32", "float64")
BACKEND_NAMES = ("loop", "vectorized", "jit")
OPTIMIZER_NAMES = ("sgd", "momentum", "rmsprop", "adam")  # as mnist_nn.optimizers.OPTIMIZER_NAMES
SCHEDULE_NAMES = ("constant", "step", "cosine")
N_INPUTS, N_CLASSES, TRAIN_IMAGES = 784, 10, 60_000
MAX_LAYERS = 16  # hidden layers; far past what this network learns from, and keeps messages short
# Names an older mnist_nn wrote to history.json, read as today's.
OLD_NAMES = {"eta": "lr", "lmbda": "l2"}


@dataclass(frozen=True)
class Settings:
    """Everything that describes a run. The defaults are the classic setup (Nielsen's network.py):
    784-30-10 sigmoid, quadratic cost, N(0, 1) init, mini-batch 10, lr 3.0, 30 epochs, seed 0,
    50,000 training images (the last 10,000 held out for validation), float32 on the jit backend,
    plain SGD at a constant learning rate, no early stopping."""

    epochs: int = 30
    batch_size: int = 10
    lr: float = 3.0
    hidden: tuple[int, ...] = (30,)
    activation: str = "sigmoid"
    cost: str = "quadratic"
    init: str = "normal"
    l2: float = 0.0
    seed: int = 0
    backend: str = "jit"
    dtype: str = "float32"
    validation_size: int = 10_000
    optimizer: str = "sgd"  # the update rule: sgd, momentum, rmsprop or adam (mnist_nn.optimizers)
    momentum: float = 0.9  # mu of momentum
    rho: float = 0.9  # RMSprop's decay of the mean square
    beta1: float = 0.9  # Adam's decay of the mean gradient
    beta2: float = 0.999  # Adam's decay of the mean square
    eps: float = 1e-8  # RMSprop's and Adam's guard against dividing by zero
    train_size: int = 0  # train on the first N images of the training split; 0: all of them
    patience: int = 0  # stop when validation accuracy has not improved for this many epochs; 0: never
    lr_schedule: str = "constant"  # constant; step: lr * lr_gamma^(epoch // lr_step); cosine: to 0 over the run
    lr_step: int = 10
    lr_gamma: float = 0.1
    batch_norm: bool = False  # normalize each hidden layer's z over the mini-batch (mnist_nn.batchnorm)

    # What fixes a run's arithmetic: a resume may not change these.
    FIXED = ("batch_size", "lr", "hidden", "activation", "cost", "init", "l2", "seed", "dtype", "validation_size",
             "optimizer", "momentum", "rho", "beta1", "beta2", "eps", "train_size", "lr_schedule", "lr_step",
             "lr_gamma", "batch_norm")

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))

    @property
    def sizes(self) -> tuple[int, ...]:
        return (N_INPUTS, *self.hidden, N_CLASSES)

    @property
    def training_images(self) -> int:
        """How many images the run trains on."""
        split = TRAIN_IMAGES - self.validation_size
        return min(self.train_size, split) if self.train_size else split

    def lr_at(self, epoch: int) -> float:
        """The learning rate of the epoch after ``epoch`` epochs (0 for the first), per ``lr_schedule``:
        step, lr * lr_gamma^(epoch // lr_step) (torch's StepLR); cosine, lr (1 + cos(pi epoch / epochs)) / 2
        (torch's CosineAnnealingLR with T_max = epochs, stepped once per epoch)."""
        if self.lr_schedule == "step":
            return self.lr * self.lr_gamma ** (epoch // self.lr_step)
        if self.lr_schedule == "cosine":
            return self.lr * (1 + math.cos(math.pi * epoch / max(self.epochs, 1))) / 2
        return self.lr

    def optimizer_rule(self):
        """The :class:`mnist_nn.optimizers.Optimizer` these settings name."""
        from mnist_nn.optimizers import Optimizer

        return Optimizer(self.optimizer, self.momentum, self.rho, self.beta1, self.beta2, self.eps)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d, where: str = "settings", error=UsageError) -> "Settings":
        """Settings from a dict (``history.json``'s ``settings``), every value checked; unknown keys
        are ignored (a newer mnist_nn's additions), missing ones take the defaults only where an older
        mnist_nn did not write them (``backend``, ``dtype``, ``validation_size``, ``init``)."""
        if not isinstance(d, dict):
            raise error(f"{where} is a {type(d).__name__}, not a JSON object")
        d = {OLD_NAMES.get(k, k): v for k, v in d.items()}
        required = ("batch_size", "lr", "hidden", "activation", "cost", "seed")
        missing = [k for k in required if k not in d]
        if missing:
            raise error(f"{where} lacks {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "hidden" in values and not isinstance(values["hidden"], (list, tuple)):
            raise error(f"{where}: hidden must be a list of layer sizes, got {values['hidden']!r}")
        try:
            settings = cls(**values)
        except TypeError as exc:  # a field of a type no value check expects
            raise error(f"{where}: {exc}") from None
        settings.check(error=error, where=where)
        return settings

    def check(self, error=UsageError, where: str = "") -> "Settings":
        """Refuse any value a run cannot use, naming the flag (or the field of ``where``)."""

        def bad(name: str, problem: str):
            label = f"{where}: {name}" if where else f"--{name.replace('_', '-')}"
            raise error(f"{label} {problem}")

        for name in ("epochs", "batch_size", "seed", "validation_size", "train_size", "patience", "lr_step"):
            value = getattr(self, name)
            if not _is_int(value):
                bad(name, f"must be a whole number, got {value!r}")
        for name in ("lr", "l2", "momentum", "rho", "beta1", "beta2", "eps", "lr_gamma"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                bad(name, f"must be a finite number, got {value!r}")
        for name, choices in (("activation", ACTIVATION_NAMES), ("cost", COST_NAMES), ("init", INIT_NAMES),
                              ("dtype", DTYPE_NAMES), ("backend", BACKEND_NAMES), ("optimizer", OPTIMIZER_NAMES),
                              ("lr_schedule", SCHEDULE_NAMES)):
            if getattr(self, name) not in choices:
                bad(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.epochs < 0:
            bad("epochs", f"must be zero or more, got {self.epochs}")
        if not self.lr > 0:
            bad("lr", f"must be positive, got {self.lr}")
        if self.l2 < 0:
            bad("l2", f"must be zero or positive, got {self.l2}")
        if not 0 <= self.seed < 2**63:
            bad("seed", f"must be between 0 and 2^63 - 1, got {self.seed}")
        if not self.hidden or len(self.hidden) > MAX_LAYERS or not all(_is_int(h) and h >= 1 for h in self.hidden):
            bad("hidden", f"must be 1 to {MAX_LAYERS} sizes of at least 1, got {' '.join(map(repr, self.hidden)) or 'none'}")
        if not 0 <= self.validation_size < TRAIN_IMAGES:
            bad("validation_size", f"must be between 0 and {TRAIN_IMAGES - 1}, got {self.validation_size}")
        for name in ("momentum", "rho", "beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, f"must be at least 0 and below 1, got {getattr(self, name)}")
        if not self.eps > 0:
            bad("eps", f"must be positive, got {self.eps}")
        if not self.lr_gamma > 0:
            bad("lr_gamma", f"must be positive, got {self.lr_gamma}")
        if self.lr_step < 1:
            bad("lr_step", f"must be at least 1 epoch, got {self.lr_step}")
        if not 0 <= self.train_size <= TRAIN_IMAGES - self.validation_size:
            bad("train_size", f"must be between 1 and {TRAIN_IMAGES - self.validation_size} (the training split "
                              f"left by --validation-size {self.validation_size}), or 0 for all, got {self.train_size}")
        if not isinstance(self.batch_norm, bool):
            bad("batch_norm", f"must be true or false, got {self.batch_norm!r}")
        if self.batch_norm and (self.batch_size < 2 or self.training_images % self.batch_size == 1):
            bad("batch_size", f"with --batch-norm must make mini-batches of at least 2 images, the last one too "
                              f"({self.training_images} images in batches of {self.batch_size}); choose another")
        if self.patience < 0:
            bad("patience", f"must be zero (no early stopping) or more, got {self.patience}")
        if self.patience and not self.validation_size:
            bad("patience", "needs a validation set to watch: give --validation-size N too (early stopping on the "
                            "test set would choose by the test)")
        if not 1 <= self.batch_size <= self.training_images:
            bad("batch_size", f"must be between 1 and the training set size {self.training_images}, got {self.batch_size}")
        self.check_memory(error, where)
        return self

    def memory_needed(self) -> int:
        """Bytes a run of these sizes needs, roughly: the parameters in a few copies (the network, the
        kernel's layout, the snapshots being measured, the gradients) and the activations of the
        largest layer over an evaluation block of 10,000 images (the dense backends evaluate that way)."""
        itemsize = 4 if self.dtype == "float32" else 8
        sizes = self.sizes
        parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        return itemsize * (6 * parameters + 3 * 10_000 * max(sizes))

    def check_memory(self, error=UsageError, where: str = "") -> None:
        needed, available = self.memory_needed(), physical_memory()
        if available and needed > 0.8 * available:
            sizes = "-".join(map(str, self.sizes))
            problem = (f"a {sizes} network needs about {needed / 2**30:.1f} GiB of memory and this machine has "
                       f"{available / 2**30:.1f} GiB")
            if where:  # from a file (a run's history.json): no flag fixes it
                raise error(f"{where}: hidden {list(self.hidden)}: {problem}; it cannot be trained here")
            raise error(f"{problem}; choose smaller --hidden sizes")


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
