"""Atomic file writes: everything mnist_nn saves appears whole or not at all.

A file is written to a hidden temporary file in the same folder and renamed into place with
``os.replace`` (atomic on POSIX and Windows), so a crash, a kill or a failed check never leaves a
half-written download, model or history behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield ``(file, temporary_path)``; on a clean exit the temporary file becomes ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it a plain new file's mode
        with os.fdopen(fd, mode) as f:
            yield f, tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> None:
    with atomic_write(path, "w") as (f, _):
        f.write(text)
