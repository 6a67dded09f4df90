"""Every error a user can act on, in one ground-floor module that every other module may import.

Each is printed by the command-line edge (:func:`mnist_nn.cli.run_command`) as one line naming the
problem and the fix; ``exit_status`` is the process exit status it maps to (2 for a bad flag, 1 for
everything else). Library callers catch them as ordinary exceptions.
"""

from __future__ import annotations


class MnistNNError(Exception):
    """Base class: a problem with the user's input, files, disk or network (not a bug)."""

    exit_status = 1


class UsageError(MnistNNError):
    """A bad flag or setting, or one that conflicts with the run being resumed."""

    exit_status = 2


class MnistError(MnistNNError):
    """Base class of every data error (download, cache, IDX format)."""


class MnistFormatError(MnistError, ValueError):
    """An IDX file is broken: truncated, not IDX at all, wrong magic, wrong dimensions..."""


class MnistDownloadError(MnistError):
    """A file could not be had: every mirror failed, or offline mode and it is not cached."""


class ModelFileError(MnistNNError, ValueError):
    """A model file is missing, not an mnist_nn model, too new, too large, or inconsistent."""


class ImageError(MnistNNError, ValueError):
    """An image cannot be read or holds no digit."""


class OutputError(MnistNNError):
    """A result the user asked for (plots, pictures) cannot be written: not a folder, not writable, disk full."""


class RunFolderError(MnistNNError):
    """A run folder (model.npz + history.json) is missing, incomplete, tampered with, or taken."""


class DivergedError(MnistNNError):
    """Training produced NaN or inf, or the weights blew up."""


class CheckpointError(MnistNNError):
    """A checkpoint could not be written (disk full, folder removed, permissions)."""
