"""What every command line shares: flag errors as one line, exit status 2, no usage dump."""

from __future__ import annotations

import argparse
import gc
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors printed as a single line that points at --help."""

    def error(self, message):
        fail(f"{self.prog}: error: {message} (see --help)", 2)


def fail(message: str, status: int = 1):
    """Print ``message`` as one line on stderr and exit with ``status``."""
    print(message, file=sys.stderr)
    sys.exit(status)


def finish(status: int):
    """Exit with ``status``, skipping the interpreter's final garbage collection: it walks every object
    NumPy, Numba and matplotlib made (0.2-0.3 s here) only to free memory the OS takes back anyway."""
    gc.freeze()
    sys.exit(status)
