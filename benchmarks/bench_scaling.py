"""How the cost of an epoch grows with the hidden layer and the mini-batch, vectorized against jit.

    python benchmarks/bench_scaling.py [--threads 1] [--dtype float32] [--samples 10000] [--plot PATH] [--json PATH]

Seconds per 50,000-image epoch (784-H-10 sigmoid network, quadratic cost, eta 3.0) for hidden sizes
30, 100, 300, 1000 at batch 10, and for batch sizes 1, 10, 100, 1000 at H = 30. Each point is the
median of the measured epochs after a warm-up, timed on ``--samples`` images and scaled to 50,000.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (must come before NumPy: it sets the thread counts)
from mnist_nn.cli import ArgumentParser, finish, int_at_least, load_data, run_command  # noqa: E402

HIDDEN_SIZES = (30, 100, 300, 1000)
BATCH_SIZES = (1, 10, 100, 1000)
BACKENDS = ("vectorized", "jit")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0], prog="benchmarks/bench_scaling.py")
    p.add_argument("--threads", type=int_at_least(1), default=1, help="threads for BLAS and Numba (default 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="precision (default float32)")
    p.add_argument("--samples", type=int_at_least(1), default=10_000, help="images per timed epoch, scaled to 50,000 "
                                                               "(default 10000)")
    p.add_argument("--epochs", type=int_at_least(1), default=2, help="measured epochs per point (default 2)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch of 1,000 images per point")
    common.add_shared_flags(p, "write the points as JSON", "write the two curves as a PNG")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.epochs = 1000, 1
    return args


def epoch_seconds(backend, hidden, batch, X, labels, dtype, epochs, full):
    import numpy as np

    from mnist_nn import Network
    from mnist_nn.backends import get_backend

    net = Network((784, hidden, 10), seed=0, dtype=dtype)
    run = get_backend(backend).prepare(net, X, labels, batch)
    rng = np.random.default_rng(1)
    seconds = common.time_calls(lambda: run(rng.permutation(len(labels)), 3.0, 0.0), epochs)
    return common.summary(seconds, scale=full / len(labels))["seconds_per_epoch"]


def main(argv=None) -> int:
    args = parse_args(argv)
    common.check_outputs(args.json, args.plot)
    common.limit_threads(args.threads)
    import numpy as np


    data = load_data(args, validation_size=0, dtype=np.float32, quiet=True)  # then the first 50,000
    full = min(len(data.train.labels), 50_000)
    X, labels = data.train.images[:min(args.samples, full)], data.train.labels[:min(args.samples, full)]
    dtype = np.dtype(args.dtype)
    print(common.header(f"Seconds per 50,000-image epoch, {args.dtype}", args.threads))
    sweeps = {"hidden": [(h, 10) for h in HIDDEN_SIZES], "batch": [(30, b) for b in BATCH_SIZES]}
    points = []
    for sweep, settings in sweeps.items():
        rows = []
        for hidden, batch in settings:
            timing = {b: epoch_seconds(b, hidden, batch, X, labels, dtype, args.epochs, full) for b in BACKENDS}
            points += [{"sweep": sweep, "hidden": hidden, "batch_size": batch, "backend": b, "dtype": args.dtype,
                        "threads": args.threads, "seconds_per_epoch": t} for b, t in timing.items()]
            rows.append([str(hidden if sweep == "hidden" else batch), f"{timing['vectorized']:.3f}",
                         f"{timing['jit']:.3f}", f"{timing['vectorized'] / timing['jit']:.1f}x"])
            print(f"  {sweep} H={hidden} batch={batch}: {timing}", file=sys.stderr, flush=True)
        label = "hidden units (batch 10)" if sweep == "hidden" else "batch size (H = 30)"
        print(f"\n{label}\n")
        print(common.markdown_table([label.split(" (")[0], "vectorized s", "jit s", "jit speedup"], rows))
    print(f"\nTimed on {len(labels)} images per epoch, scaled to {full}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": common.machine(), "points": points}, indent=1))
    if args.plot:
        from mnist_nn.plots import plt, save_figure

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        for ax, (sweep, key, xlabel) in zip(axes, (("hidden", "hidden", "hidden units (batch 10)"),
                                                   ("batch", "batch_size", "mini-batch size (30 hidden units)"))):
            for backend, marker in zip(BACKENDS, "os"):
                chosen = [p for p in points if p["sweep"] == sweep and p["backend"] == backend]
                ax.plot([p[key] for p in chosen], [p["seconds_per_epoch"] for p in chosen], marker=marker,
                        label=backend)
            ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="seconds per epoch")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.suptitle(f"Epoch time against network and batch size ({args.dtype}, {args.threads} thread(s))")
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    finish(run_command(main, prog="benchmarks/" + Path(__file__).name))
