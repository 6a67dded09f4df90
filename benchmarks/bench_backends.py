"""One training epoch of the classic network, every implementation side by side.

    python benchmarks/bench_backends.py [--threads 1] [--epochs 5] [--json PATH] [--plot PATH] [--quick]

The job: 50,000 MNIST images, 784-30-10 sigmoid network, quadratic cost, mini-batches of 10, lr 3.0,
one shuffle per epoch, the same initial weights everywhere. Timed: mnist_nn's loop (float64, on a
subset of the epoch, scaled up), vectorized and jit backends in float64 and float32, and, when they are
importable (they are never dependencies), PyTorch on the CPU written the usual way (autograd +
torch.optim.SGD) and with hand-written backprop under torch.no_grad(), and JAX (one jax.jit call per
epoch, lax.scan over the mini-batches). Then the training toolbox (issue 14): the jit backend with
momentum, RMSprop and Adam (784-30-10 sigmoid, cross-entropy, batch 10), each beside plain SGD on the
same setup and beside PyTorch's torch.optim doing the same (autograd, one thread); not with --quick.
Median and min-max over the measured epochs after one warm-up epoch (30 for the jit backend, a
whole training run, so that late epochs count as much as early ones). The jit backend's compile cost
is measured separately, in fresh processes with an empty and then a warm Numba cache.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (must come before NumPy: it sets the thread counts)
from mnist_nn.cli import ArgumentParser, finish, int_at_least, load_data, run_command  # noqa: E402

LR, BATCH = 3.0, 10


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0], prog="benchmarks/bench_backends.py")
    p.add_argument("--threads", type=int_at_least(1), default=1, help="threads for BLAS, Numba and PyTorch (default 1)")
    p.add_argument("--epochs", type=int_at_least(1), default=5, help="measured epochs per implementation (default 5)")
    p.add_argument("--jit-epochs", type=int_at_least(1), default=30,
                   help="measured epochs of the jit backend: a whole training run, so late epochs count too "
                        "(default 30)")
    p.add_argument("--loop-samples", type=int_at_least(1), default=5000,
                   help="images per timed epoch of the slow loop backend, scaled to 50,000 (default 5000)")
    p.add_argument("--samples", type=int_at_least(1), default=50_000, help="images per epoch for the others (default 50000)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in well under a minute: 1 epoch on 5,000 images (500 for the loop backend), scaled to 50,000; no compile timing")
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX even if installed")
    p.add_argument("--no-optimizers", action="store_true",
                   help="skip the table of the optimizers (momentum, RMSprop, Adam beside SGD and torch.optim)")
    common.add_shared_flags(p, "write one record per implementation as JSON",
                            "write a bar chart (log scale) of seconds per epoch")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.jit_epochs = 1, 1
        args.samples, args.loop_samples = min(args.samples, 5000), min(args.loop_samples, 500)
    return args


# --------------------------------------------------------------------------- the implementations

def mnist_nn_epoch(backend, dtype, X, labels):
    """An epoch of mnist_nn's own backend (seed 0: the same initial weights as the peers get)."""
    import numpy as np

    from mnist_nn import Network
    from mnist_nn.backends import get_backend

    net = Network((784, 30, 10), seed=0, dtype=dtype)
    run = get_backend(backend).prepare(net, X, labels, BATCH)
    rng = np.random.default_rng(1)
    return lambda: run(rng.permutation(len(labels)), LR, 0.0)


def torch_epochs(X, labels, initial, threads):
    """Two PyTorch versions of the same epoch: (autograd + optim.SGD, hand-written backprop)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    x_all = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    y_all = torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), 10).float()
    start = [torch.from_numpy(a.astype(np.float32)) for a in (initial.weights[0], initial.biases[0],
                                                                initial.weights[1], initial.biases[1])]
    n = len(labels)

    model = torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 10),
                                torch.nn.Sigmoid())
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), start):
            parameter.copy_(value)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def autograd_epoch():
        order = torch.randperm(n)
        for k in range(0, n, BATCH):
            batch = order[k:k + BATCH]
            optimizer.zero_grad()
            loss = 0.5 * ((model(x_all[batch]) - y_all[batch]) ** 2).sum(dim=1).mean()  # C = 1/2 ||a - y||^2
            loss.backward()
            optimizer.step()

    w1, b1, w2, b2 = (t.clone() for t in start)

    def handwritten_epoch():
        order = torch.randperm(n)
        with torch.no_grad():
            for k in range(0, n, BATCH):
                batch = order[k:k + BATCH]
                x, y = x_all[batch], y_all[batch]
                a1 = torch.sigmoid(torch.addmm(b1, x, w1.T))
                a2 = torch.sigmoid(torch.addmm(b2, a1, w2.T))
                d2 = (a2 - y) * a2 * (1 - a2)  # BP1
                d1 = (d2 @ w2) * a1 * (1 - a1)  # BP2
                step = LR / len(batch)
                w2.addmm_(d2.T, a1, alpha=-step)  # BP4 and the update
                b2.sub_(d2.sum(0), alpha=step)  # BP3
                w1.addmm_(d1.T, x, alpha=-step)
                b1.sub_(d1.sum(0), alpha=step)

    return autograd_epoch, handwritten_epoch


def jax_epoch(X, labels, initial):
    import jax
    import jax.numpy as jnp
    import numpy as np

    x_all = jnp.asarray(X, dtype=jnp.float32)
    y_all = jnp.asarray(np.eye(10, dtype=np.float32)[labels])
    params = [tuple(jnp.asarray(a, dtype=jnp.float32) for a in (initial.weights[0], initial.biases[0],
                                                                 initial.weights[1], initial.biases[1]))]

    def cost(p, x, y):
        a1 = jax.nn.sigmoid(x @ p[0].T + p[1])
        a2 = jax.nn.sigmoid(a1 @ p[2].T + p[3])
        return 0.5 * jnp.sum((a2 - y) ** 2) / x.shape[0]

    def step(p, batch):
        x, y = batch
        grads = jax.grad(cost)(p, x, y)
        return tuple(value - LR * g for value, g in zip(p, grads)), None

    @jax.jit
    def train_epoch(p, x, y, order):
        # The whole epoch is one compiled call: gather the shuffled batches, scan the SGD step over them.
        batches = (x[order].reshape(-1, BATCH, x.shape[1]), y[order].reshape(-1, BATCH, y.shape[1]))
        return jax.lax.scan(step, p, batches)[0]

    rng = np.random.default_rng(1)

    def epoch():
        params[0] = jax.block_until_ready(train_epoch(params[0], x_all, y_all, rng.permutation(len(labels))))

    return epoch


# --------------------------------------------------------------------------- the optimizers (issue 14)

OPTIMIZER_LRS = {"sgd": 0.05, "momentum": 0.05, "rmsprop": 0.001, "adam": 0.001}  # the accuracy table's
OPTIMIZER_ROWS = [(name, False) for name in OPTIMIZER_LRS] + [("sgd", True), ("adam", True)]  # (rule, batch norm)


def optimizer_epochs(name, batch_norm, X, labels, threads, peers):
    """(mnist_nn jit float32, torch.optim or None) epochs of 784-30-10 sigmoid + cross-entropy with ``name``
    (and BatchNorm1d on the hidden layer)."""
    import numpy as np

    from mnist_nn import Network
    from mnist_nn.backends import jit

    lr = OPTIMIZER_LRS[name]
    net = Network((784, 30, 10), cost="cross-entropy", init="scaled", seed=0, batch_norm=batch_norm)
    net.use_optimizer(name)
    run, rng = jit.prepare(net, X, labels, BATCH), np.random.default_rng(1)
    ours = lambda: run(rng.permutation(len(labels)), lr, 0.0)  # noqa: E731
    if not peers:
        return ours, None
    import torch

    torch.set_num_threads(threads)
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(labels.astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(784, 30), *([torch.nn.BatchNorm1d(30)] if batch_norm else []),
                                torch.nn.Sigmoid(), torch.nn.Linear(30, 10))
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=lr), "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
            "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr, alpha=0.9), "adam": lambda p: torch.optim.Adam(p, lr=lr)}
    optimizer = make[name](model.parameters())

    def theirs():
        order = torch.randperm(len(y_all))
        for k in range(0, len(y_all), BATCH):
            batch = order[k:k + BATCH]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_all[batch]), y_all[batch]).backward()
            optimizer.step()

    return ours, theirs


def optimizer_table(X, labels, args, peers: bool) -> list[dict]:
    records = []
    for name, batch_norm in OPTIMIZER_ROWS:
        ours, theirs = optimizer_epochs(name, batch_norm, X, labels, args.threads, peers)
        record = {"optimizer": name, "batch_norm": batch_norm, "lr": OPTIMIZER_LRS[name], "threads": args.threads,
                  "jit_float32": common.summary(common.time_calls(ours, args.epochs))}
        if theirs is not None:
            record["torch_optim"] = common.summary(common.time_calls(theirs, max(1, args.epochs // 2)))
        records.append(record)
        print(f"  {name}{' + batch norm' if batch_norm else ''}: jit {record['jit_float32']['seconds_per_epoch']:.4f} s "
              f"per epoch", file=sys.stderr, flush=True)
    sgd = records[0]["jit_float32"]["seconds_per_epoch"]
    rows = []
    for r in records:
        ours = r["jit_float32"]["seconds_per_epoch"]
        theirs = r.get("torch_optim", {}).get("seconds_per_epoch")
        rows.append([r["optimizer"] + (" + batch norm" if r["batch_norm"] else ""), str(r["lr"]), f"{ours:.4f}", f"{ours / sgd:.2f}x",
                     f"{theirs:.3f}" if theirs else "not installed", f"{theirs / ours:.0f}x" if theirs else "-"])
    print("\nThe optimizers: 784-30-10 sigmoid, cross-entropy, scaled init, batch 10, 50,000 images, float32\n")
    print(common.markdown_table(["optimizer", "lr", "jit s/epoch (median)", "vs jit SGD", "torch.optim s/epoch",
                                 "jit speedup vs torch"], rows))
    return records


# --------------------------------------------------------------------------- compile cost

COMPILE_PROBE = """
import time, numpy as np
started = time.perf_counter()
from mnist_nn import Network
from mnist_nn.backends import jit
rng = np.random.default_rng(0)
X = (rng.random((2000, 784)) < 0.2).astype(np.float32)
y = rng.integers(0, 10, 2000)
imported = time.perf_counter()
net = Network(dtype=np.float32)
run = jit.prepare(net, X, y, 10)
run(np.arange(2000), 3.0, 0.0)
net.evaluator(X, y)()
print(imported - started, time.perf_counter() - imported)
"""


def compile_cost(threads: int) -> dict:
    """First use of the jit backend (train an epoch of 2,000 images, evaluate them) in fresh processes."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        timings = []
        for _ in ("empty cache", "warm cache"):
            out = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            timings.append(float(out[1]))
    return {"first_call_empty_cache_s": timings[0], "first_call_warm_cache_s": timings[1]}


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    common.check_outputs(args.json, args.plot)
    common.limit_threads(args.threads)
    import importlib.util

    import numpy as np

    from mnist_nn import Network

    data = load_data(args, validation_size=0, dtype=np.float32, quiet=True)  # then the first 50,000
    X, labels = data.train.images[:50_000], data.train.labels[:50_000]
    full = len(labels)
    n = min(args.samples, full)
    initial = Network((784, 30, 10), seed=0, dtype=np.float64)  # the starting weights every implementation gets
    print(common.header("Seconds per training epoch (50,000 images, 784-30-10, batch 10, lr 3.0)", args.threads))

    candidates = [
        ("mnist_nn loop", "float64", lambda: mnist_nn_epoch("loop", np.float64, X[:args.loop_samples],
                                                            labels[:args.loop_samples]), args.loop_samples),
        ("mnist_nn vectorized", "float64", lambda: mnist_nn_epoch("vectorized", np.float64, X[:n], labels[:n]), n),
        ("mnist_nn vectorized", "float32", lambda: mnist_nn_epoch("vectorized", np.float32, X[:n], labels[:n]), n),
        ("mnist_nn jit", "float64", lambda: mnist_nn_epoch("jit", np.float64, X[:n], labels[:n]), n),
        ("mnist_nn jit", "float32", lambda: mnist_nn_epoch("jit", np.float32, X[:n], labels[:n]), n),
    ]
    peers_missing = []
    if not args.no_peers:
        if importlib.util.find_spec("torch"):
            torch_made = {}

            def torch_version(which):
                if not torch_made:
                    torch_made["both"] = torch_epochs(X[:n], labels[:n], initial, args.threads)
                return torch_made["both"][which]

            candidates += [("PyTorch autograd + optim.SGD", "float32", lambda: torch_version(0), n),
                           ("PyTorch hand-written backprop", "float32", lambda: torch_version(1), n)]
        else:
            peers_missing.append("PyTorch")
        if importlib.util.find_spec("jax"):
            candidates.append(("JAX jit (lax.scan over the epoch)", "float32", lambda: jax_epoch(X[:n], labels[:n], initial), n))
        else:
            peers_missing.append("JAX")

    records = []
    for name, dtype, make, samples in candidates:
        epoch = make()
        epochs = args.jit_epochs if name == "mnist_nn jit" else args.epochs
        seconds = common.time_calls(epoch, epochs)
        record = {"implementation": name, "dtype": dtype, "threads": args.threads, "epochs_measured": epochs,
                  "samples_timed": samples, **common.summary(seconds, scale=full / samples)}
        record["samples_per_second"] = full / record["seconds_per_epoch"]
        if samples != full:
            record["note"] = f"timed on {samples} images per epoch, scaled to {full}"
        records.append(record)
        print(f"  {name} {dtype}: {record['seconds_per_epoch']:.4f} s per epoch", file=sys.stderr, flush=True)

    loop = next(r for r in records if r["implementation"] == "mnist_nn loop")
    vectorized = {r["dtype"]: r for r in records if r["implementation"] == "mnist_nn vectorized"}
    rows = []
    for r in records:
        r["speedup_vs_loop"] = loop["seconds_per_epoch"] / r["seconds_per_epoch"]
        r["speedup_vs_vectorized"] = vectorized[r["dtype"]]["seconds_per_epoch"] / r["seconds_per_epoch"]
        rows.append([r["implementation"] + (" *" if "note" in r else ""), r["dtype"], f"{r['seconds_per_epoch']:.4f}",
                     f"{r['min']:.4f}-{r['max']:.4f}", f"{r['samples_per_second']:,.0f}",
                     f"{r['speedup_vs_loop']:.1f}x", f"{r['speedup_vs_vectorized']:.2f}x"])
    print(common.markdown_table(["implementation", "dtype", "s/epoch (median)", "min-max", "images/s",
                                 "vs loop", "vs vectorized (same dtype)"], rows))
    notes = list(dict.fromkeys(f"* {r['implementation']}: {r['note']}." for r in records if "note" in r))
    if peers_missing:
        notes.append(f"Not installed, so not measured: {', '.join(peers_missing)} (CPU-only: `pip install torch --index-url https://download.pytorch.org/whl/cpu`, then `pip install \".[bench]\"`; see the README).")
    print("\n" + "\n".join(notes) if notes else "")
    print("\nseconds per epoch, log scale:\n```\n" + common.text_bars(
        [f"{r['implementation']} {r['dtype']}" for r in records], [r["seconds_per_epoch"] for r in records]) + "\n```")

    compile_record = None
    if not args.quick:
        compile_record = compile_cost(args.threads)
        print(f"\njit backend, first use in a fresh process (train 2,000 images + evaluate): "
              f"{compile_record['first_call_empty_cache_s']:.2f} s with an empty Numba cache, "
              f"{compile_record['first_call_warm_cache_s']:.2f} s with the cache warm")

    optimizer_records = None
    if not args.quick and not args.no_optimizers:
        optimizer_records = optimizer_table(X[:n], labels[:n], args, not args.no_peers and importlib.util.find_spec("torch"))

    jit32 = next(r for r in records if r["implementation"] == "mnist_nn jit" and r["dtype"] == "float32")
    deciles = statistics.quantiles(jit32["epoch_seconds"], n=10) if len(jit32["epoch_seconds"]) > 1 else []
    checks = [f"jit float32: median {jit32['seconds_per_epoch']:.4f} s, slowest epoch {jit32['max']:.4f} s per epoch"
              + (f" (10% of epochs took over {deciles[-1]:.4f} s, "
                 f"{sum(s > 0.06 for s in jit32['epoch_seconds'])} of {len(jit32['epoch_seconds'])} over 0.06 s)"
                 if deciles else ""),
              f"jit float32 vs vectorized float32: {jit32['speedup_vs_vectorized']:.2f}x"]
    handwritten = next((r for r in records if r["implementation"] == "PyTorch hand-written backprop"), None)
    if handwritten:
        checks.append(f"jit float32 vs PyTorch hand-written backprop: "
                      f"{handwritten['seconds_per_epoch'] / jit32['seconds_per_epoch']:.2f}x")
    print("\n" + "\n".join(checks))

    if args.json:
        Path(args.json).write_text(json.dumps({"machine": common.machine(), "threads": args.threads,
                                               "records": records, "compile": compile_record,
                                               "optimizer_records": optimizer_records}, indent=1))
    if args.plot:
        from mnist_nn.plots import plt, save_figure

        fig, ax = plt.subplots(figsize=(9, 0.45 * len(records) + 1.5), layout="constrained")
        names = [f"{r['implementation']} ({r['dtype']})" for r in records]
        ax.barh(names[::-1], [r["seconds_per_epoch"] for r in records][::-1], color="tab:blue")
        for y, r in enumerate(records[::-1]):
            ax.text(r["seconds_per_epoch"] * 1.05, y, f"{r['seconds_per_epoch']:.3f} s", va="center", fontsize=8)
        ax.set(xscale="log", xlabel="seconds per epoch (log scale, lower is better)",
               title=f"One epoch of 784-30-10 on 50,000 MNIST images, {args.threads} thread(s)")
        ax.set_xlim(right=max(r["seconds_per_epoch"] for r in records) * 3)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    finish(run_command(main, prog="benchmarks/" + Path(__file__).name))
