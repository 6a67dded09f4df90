"""``python -m mnist_nn.data``: download the four MNIST files into the cache, or show the cache's state."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mnist_nn.cli import ArgumentParser, add_data_flags, finish, run_command
from mnist_nn.data.cache import CHECKSUMS, cached_path, data_dir_path, folder_error, is_verified, odd_entry
from mnist_nn.data.download import fetch


def _info(folder: Path) -> int:
    print(f"cache folder: {folder}{'' if folder.is_dir() else '  (does not exist yet)'}")
    complete, unstamped = True, []
    for name, (sha, size) in CHECKSUMS.items():
        path = cached_path(name, folder)
        if path is None:
            odd = odd_entry(name, folder)
            state = f"missing: {odd.removeprefix(str(folder) + '/')}" if odd else "missing"
            complete = False
        elif is_verified(path, sha, size, unstamped):
            state = f"verified  {path.stat().st_size / 1e6:7.2f} MB"
        else:
            state, complete = "CORRUPT (checksum mismatch; run download --force)", False
        print(f"  {name:26s} {state}")
    print("all four files present and verified" if complete else "run `python -m mnist_nn.data download` to fetch the rest")
    if unstamped:
        print(f"note: cannot write .verified stamps in {folder} ({unstamped[0]}); each load hashes the files again",
              file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mnist_nn.data", description="Download, verify and inspect the cached MNIST files.")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch and verify the four IDX files",
                        description="Fetch the four MNIST files into the cache folder and verify their SHA-256.")
    add_data_flags(dl)
    dl.add_argument("--force", action="store_true", help="download again even if verified files are cached")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")
    info = sub.add_parser("info", help="show the cache folder and which files are there and verified",
                          description="Show the cache folder and the state of each file.")
    info.add_argument("--data-dir", metavar="DIR", help="MNIST cache folder [default: $MNIST_NN_DATA, else "
                                                       "$XDG_CACHE_HOME/mnist_nn, else ~/.cache/mnist_nn]")
    args = parser.parse_args(argv)
    folder = data_dir_path(args.data_dir)
    if args.command == "info":
        try:
            return _info(folder)
        except BrokenPipeError:  # `info | head -1`: the reader is gone, not a problem of the folder
            raise
        except OSError as exc:  # a folder name too long, a path through a file...
            raise folder_error(folder, exc) from None
    started = time.perf_counter()
    paths = fetch(folder, args.mirror, force=args.force, quiet=args.quiet, offline=args.offline)
    seconds = time.perf_counter() - started
    if not args.quiet:
        for path in paths.values():
            print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  verified")
        print(f"done in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    finish(run_command(main, prog="python -m mnist_nn.data"))
