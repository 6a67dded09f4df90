"""The sweep on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, one worker killed with SIGKILL while it trains, and every run accounted for exactly once."""

from __future__ import annotations

import signal
import time


from conftest import TinyMnist
from sweephelp import (START_LIMIT_S, procs, read_results, require_dask, start_cluster,  # noqa: F401  (procs: a fixture)
                       write_trusted_cache)


def test_a_killed_worker_s_run_is_done_by_the_other_worker_exactly_once(tmp_path, procs):
    require_dask()
    from distributed import Client

    cache = write_trusted_cache(tmp_path / "cache", TinyMnist())
    address, workers = start_cluster(procs, tmp_path, 2)
    out = tmp_path / "sweep"
    observer = Client(address, timeout="60s", set_as_default=False)
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while len(observer.scheduler_info()["workers"]) < 2:
            assert time.monotonic() < deadline, "the two workers did not join the scheduler"
            time.sleep(0.1)
        # Runs of 40 and of 300 epochs on the tiny data (a few seconds): a worker is killed while it
        # trains a long one, which cannot finish first.
        sweep = procs.sweep("--scheduler", address, "--data-dir", str(cache), "--offline", "--validation-size", "100",
                            "--hidden", "30", "--epochs", "40", "300", "--seeds", "0-2", "--out", str(out))
        killed = None
        while killed is None:
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline + START_LIMIT_S, "no worker ever trained a long run"
            executing = observer.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
            for worker_address, keys in executing.items():
                long_runs = [k for k in keys if "epochs300" in k]
                if long_runs:
                    killed = (worker_address, long_runs[0].removeprefix("mnist_nn-run-"))
                    break
            time.sleep(0.05)
        killed_address, killed_run = killed
        names = {a: info["name"] for a, info in observer.scheduler_info()["workers"].items()}
        survivor = next(a for a in names if a != killed_address)
        workers[names[killed_address]].send_signal(signal.SIGKILL)
        workers[names[killed_address]].wait(timeout=30)
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        observer.close()
    assert sweep.returncode == 0, stderr
    results = read_results(out)
    run_ids = [r["run_id"] for r in results]
    assert len(run_ids) == 6 and len(set(run_ids)) == 6  # 2 settings x 3 seeds, each exactly once
    assert all(r["status"] == "ok" for r in results), results
    by_id = {r["run_id"]: r for r in results}
    assert by_id[killed_run]["worker"] == survivor and by_id[killed_run]["epochs"] == 300
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(run_ids)
    assert "6 runs done now (0 failed, 0 could not run)" in stdout
