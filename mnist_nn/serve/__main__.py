"""``python -m mnist_nn.serve [--runs runs/] [--host 127.0.0.1] [--port 8000] [--open]``: serve the
playground on this machine and print its URL. Ctrl-C or SIGTERM stops it; a training running then
keeps its finished epochs, and the line printed says how to continue it."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path

from mnist_nn import cli
from mnist_nn.errors import UsageError

PROG = "python -m mnist_nn.serve"


def build_parser():
    p = cli.ArgumentParser(
        prog=PROG,
        description="A local web playground: draw a digit and watch the network answer (its outputs, the 28x28 "
                    "image it sees, its hidden units), explore a model's test results, and train a new one while "
                    "its learning curve grows. Serves every run folder under --runs; runs trained from the page "
                    "are saved there as python -m mnist_nn.train saves them.")
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="the folder of run folders to serve and to train into [default runs]")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on [default 127.0.0.1: this machine only]; any other lets other "
                        "machines reach the playground and its training, so it warns")
    p.add_argument("--port", type=cli.int_at_least(0), default=8000,
                   help="port to listen on; 0 picks a free one [default 8000]")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name the browser may use for this server in its Host header (repeatable), e.g. "
                        "this machine's LAN address with --host 0.0.0.0; requests naming any other host are refused "
                        "(DNS rebinding)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    cli.add_data_flags(p)
    return p


def _import_extra():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"the playground needs the serve extra ({exc.name} is missing): "
                         f"pip install \"mnist_nn[serve]\" (or pip install \".[serve]\" in a checkout)") from None
    return uvicorn


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear line (and --port 0 works)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a name: resolved by bind
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # every response waits ~40 ms for the client's delayed ACK (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fix = "choose another --port (0 picks a free one)" if exc.errno in (98, 48) else "check --host"
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); {fix}") from None
    except (OverflowError, socket.gaierror) as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc}); check --host and --port") from None
    return sock


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    uvicorn = _import_extra()
    from mnist_nn.serve.app import create_app
    from mnist_nn.serve.security import is_loopback

    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        raise UsageError(f"--runs {runs}: is a file, not a folder of runs")

    def load_data(settings):
        """The data for a training (``fit``'s data=), or with None the data set for evaluations."""
        if settings is None:
            return cli.load_data(args, 0, "float32", quiet=True)
        return cli.load_data(args, settings.validation_size, settings.dtype, quiet=True)

    app = create_app(runs, load_data, args.host, args.allow_host)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/"
    if not is_loopback(args.host):
        print(f"warning: --host {args.host}: the playground is reachable from other machines, and anyone who "
              f"can reach it can train and read your models; requests must name it as one of "
              f"{', '.join(sorted(set(['127.0.0.1', 'localhost', args.host] + args.allow_host)))}",
              file=sys.stderr, flush=True)
    n_models = len(app.state.models.folders())
    print(f"serving {n_models} run{'s' if n_models != 1 else ''} from {runs}/ at {url}  (Ctrl-C stops)", flush=True)
    trainer = app.state.trainer

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            trainer.stop_all()  # at once: the event streams end when the training does, and let uvicorn finish
            super().handle_exit(sig, frame)

    # A page closed (or the server stopping) while an event stream writes: asyncio logs each write
    # to the closed socket as "socket.send() raised exception."; the stream ends by itself, so that
    # line tells the user nothing. Other asyncio warnings still show.
    logging.getLogger("asyncio").addFilter(lambda record: record.getMessage() != "socket.send() raised exception.")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none",
                            timeout_graceful_shutdown=10)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        Server(config).run(sockets=[sock])
    finally:
        trainer.stop_all()
        for job in trainer.wait():
            for line in job.events[-1].get("lines", []) if job.events else []:
                print(line, file=sys.stderr, flush=True)
        sock.close()
    return 0


def main(argv=None) -> int:
    return cli.run_command(_main, argv, prog=PROG)


if __name__ == "__main__":
    cli.finish(main())
