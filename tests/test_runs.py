"""Run folders under attack: kills at any moment, Ctrl-C and SIGTERM, full disks, two trainings at once,
tampered files; and the library's fit() used without the command line."""

from __future__ import annotations

import errno
import json
import random
import shutil
import signal
import time

import numpy as np
import pytest

from conftest import make_digits
from mnist_nn import Network, fitting, runfolder
from mnist_nn import train as train_cli
from mnist_nn.data import MnistData, Split
from mnist_nn.errors import RunFolderError
from mnist_nn.settings import Settings
from trainproc import processes, run_cli, tiny_args  # noqa: F401  (processes is a fixture)

QUICK = ("--quiet", "--no-plot", "--lr", "1.0", "--hidden", "12")


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def epochs_in(folder) -> int:
    try:
        return len(json.loads((folder / "history.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def error_lines(stderr: str) -> list[str]:
    """stderr without the stuck-digit warnings (tiny data at lr 3.0 gets stuck digits, as it should)."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith("warning: digit")]


def same_weights(a: Network, b: Network) -> None:
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- kills

def test_kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run(tiny_cache, tmp_path, processes):
    out = tmp_path / "run"
    rng = random.Random(7)
    args = tiny_args(tiny_cache, out, "--epochs", "100000", *QUICK)
    for round_ in range(4):
        proc = processes.start(*(args if round_ == 0 else
                                 ["--resume", str(out), "--epochs", "100000", "--data-dir", str(tiny_cache),
                                  "--offline", "--quiet", "--no-plot"]))
        before = epochs_in(out)
        assert wait_for(lambda: epochs_in(out) > before or proc.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.communicate(timeout=30)
        saved = runfolder.load(out)  # whole and consistent after every kill
        assert saved.network.epochs_trained == len(saved.records) >= 1
    done = runfolder.load(out).network.epochs_trained
    assert run_cli("--resume", str(out), "--epochs", "2", "--data-dir", str(tiny_cache), "--offline", "--quiet",
                   "--no-plot").returncode == 0
    assert not list(out.glob(".*.part"))
    reference = tmp_path / "reference"
    assert train_cli.main(tiny_args(tiny_cache, reference, "--epochs", str(done + 2), *QUICK)) == 0
    same_weights(Network.load(out), Network.load(reference))
    resumed = json.loads((out / "history.json").read_text())["epochs"]
    uninterrupted = json.loads((reference / "history.json").read_text())["epochs"]
    assert [r["test_accuracy"] for r in resumed] == [r["test_accuracy"] for r in uninterrupted]


def test_a_kill_between_the_history_and_the_model_write_is_reconciled(tiny_cache, tmp_path, capsys):
    """The one way the two files can disagree: the history one epoch ahead of the model."""
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "two", "--epochs", "2", *QUICK)) == 0
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "3", *QUICK)) == 0
    shutil.copy(tmp_path / "two" / "model.npz", tmp_path / "run" / "model.npz")
    (tmp_path / "run" / ".model.npz.x1y2.part").write_bytes(b"half a model")
    capsys.readouterr()
    assert train_cli.main(["--resume", str(tmp_path / "run"), "--epochs", "2", "--data-dir", str(tiny_cache),
                           "--offline", "--quiet", "--no-plot"]) == 0
    assert "epoch 3's checkpoint was incomplete" in capsys.readouterr().err
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "four", "--epochs", "4", *QUICK)) == 0
    same_weights(Network.load(tmp_path / "run"), Network.load(tmp_path / "four"))
    assert epochs_in(tmp_path / "run") == 4 and not list((tmp_path / "run").glob(".*.part"))


@pytest.mark.parametrize("signum,status,word", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_sigterm_keep_a_whole_checkpoint_and_say_how_to_resume(signum, status, word, tiny_cache,
                                                                          tmp_path, processes):
    out = tmp_path / "run"
    proc = processes.start(*tiny_args(tiny_cache, out, "--epochs", "100000", "--backend", "loop", "--no-plot"))
    assert wait_for(lambda: epochs_in(out) >= 1 or proc.poll() is not None)
    time.sleep(0.3)  # into the middle of a later epoch
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert word in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    assert len(error_lines(stderr)) == 1
    saved = runfolder.load(out)
    done = len(saved.records)
    assert done >= 1 and saved.network.epochs_trained == done and f"Epoch {done}/100000" in stdout
    resumed = run_cli("--resume", str(out), "--epochs", "1", "--data-dir", str(tiny_cache), "--offline",
                      "--no-plot", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert Network.load(out / "model.npz").epochs_trained == done + 1


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.25, 0.4, 0.8])
def test_ctrl_c_during_start_up_is_one_line_and_leaves_nothing(delay, tiny_cache, tmp_path, processes):
    out = tmp_path / "run"
    proc = processes.start(*tiny_args(tiny_cache, out, "--epochs", "100000", "--backend", "loop", "--no-plot"))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    # A SIGINT before the interpreter has installed its handler ends it by the default disposition,
    # silently (the shell reports that as 130 too); from then on it is one line and exit 130. One
    # moment is the interpreter's own and no program's: a SIGINT while Python imports its `site`
    # module (before any code of mnist_nn runs) is Python's "Fatal Python error: init_import_site".
    if "Fatal Python error: init_import_site" in stderr:
        assert not out.exists()
        return
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr and len(error_lines(stderr)) == (proc.returncode == 130), stderr
    if epochs_in(out) == 0:
        assert not out.exists()
    else:
        assert f"--resume {out}" in stderr


def test_two_quick_ctrl_cs_still_end_with_one_line(tiny_cache, tmp_path, processes):
    out = tmp_path / "run"
    proc = processes.start(*tiny_args(tiny_cache, out, "--epochs", "100000", "--backend", "loop", "--no-plot"))
    assert wait_for(lambda: epochs_in(out) >= 1 or proc.poll() is not None)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    runfolder.load(out)


def test_ctrl_c_before_the_first_epoch_says_nothing_was_saved(tiny_cache, tmp_path, monkeypatch, capsys):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Network, "sgd", interrupted)
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "3", "--quiet")) == 130
    assert "before the first epoch finished; nothing was saved" in capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_after_the_last_epoch_says_the_run_is_complete(tiny_cache, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import mnist_nn.plots

    monkeypatch.setattr(mnist_nn.plots, "learning_curves", interrupted)
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "2", "--quiet")) == 130
    assert "after the last epoch: the run is complete, 2 epochs" in capsys.readouterr().err
    assert runfolder.load(out).network.epochs_trained == 2


# --------------------------------------------------------------------------- folders

def test_out_of_an_existing_run_is_refused(tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "3", *QUICK)) == 0
    before = (out / "model.npz").read_bytes()
    result = run_cli(*tiny_args(tiny_cache, out, "--epochs", "1", *QUICK))
    assert result.returncode == 2 and f"continue it with --resume {out}" in result.stderr
    assert (out / "model.npz").read_bytes() == before and epochs_in(out) == 3

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = run_cli(*tiny_args(tiny_cache, other, "--epochs", "1", *QUICK))
    assert result.returncode == 2 and "holds other files; a run starts in a new or empty folder" in result.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_two_trainings_started_at_once_never_share_a_folder(tiny_cache, tmp_path, processes):
    out = tmp_path / "run"
    same = [processes.start(*tiny_args(tiny_cache, out, "--epochs", "3", *QUICK)) for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in same]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert epochs_in(out) == 3
    default = [processes.start("--data-dir", str(tiny_cache), "--offline", "--validation-size", "100",
                               "--epochs", "1", *QUICK, cwd=tmp_path) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in default)
    made = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert len(made) == 3 and all(epochs_in(p) == 1 for p in made)


def test_default_names_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders = [runfolder.create(None) for _ in range(3)]
    assert len({f.path for f in folders}) == 3 and all(f.path.is_dir() for f in folders)
    with pytest.raises(RunFolderError, match="another training is running"):
        runfolder.lock(folders[0].path)
    for folder in folders:
        folder.release()


def test_a_full_disk_stops_the_run_at_the_first_failed_checkpoint(tiny_cache, tmp_path, monkeypatch, capsys):
    real = runfolder.write_text
    calls = []

    def write_text(path, text):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(runfolder, "write_text", write_text)
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "20", "--quiet", "--no-plot")) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert "checkpoint after epoch 2 is kept" in err and f"--resume {out}" in err
    assert len(calls) == 3  # no epoch after the failure was checkpointed (or tried)
    assert runfolder.load(out).network.epochs_trained == 2


def test_a_full_disk_at_the_first_checkpoint_says_nothing_was_saved(tiny_cache, tmp_path, monkeypatch, capsys):
    def write_text(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfolder, "write_text", write_text)
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "5", "--quiet", "--no-plot")) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert "nothing was saved" in err and "start the run again" in err
    assert "--resume" not in err  # the folder is gone: there is nothing to resume
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def _tamper(history: dict, model: Network, tmp_path, tiny_cache, case: str):
    s = history["settings"]
    if case == "no lr":
        del s["lr"]
    elif case == "lr abc":
        s["lr"] = "abc"
    elif case == "hidden empty":
        s["hidden"] = []
    elif case == "hidden 5":
        s["hidden"] = 5
    elif case == "hidden huge":
        s["hidden"] = [100_000_000]
    elif case == "backend gpu":
        s["backend"] = "gpu"
    elif case == "settings a list":
        history["settings"] = [1, 2]
    elif case == "no test_accuracy":
        del history["epochs"][0]["test_accuracy"]
    elif case == "deep":
        return "[" * 100_000 + "]" * 100_000
    elif case == "no epochs":
        history["epochs"] = []
    elif case == "float16":
        s["dtype"] = "float16"
    elif case == "sizes differ":
        s["hidden"] = [13]
    elif case == "5 outputs":
        Network((784, 12, 5), seed=0).save(tmp_path / "run" / "model.npz")
    return json.dumps(history)


# What the line must say where the generic checks would not (the file's problem, not a flag's fix).
TAMPERED_SAYS = {"hidden 5": "hidden must be a list of layer sizes, got 5",
                 "hidden huge": "hidden [100000000]: a 784-100000000-10 network needs about"}


@pytest.mark.parametrize("case", ["no lr", "lr abc", "hidden empty", "hidden 5", "hidden huge", "backend gpu",
                                  "settings a list",
                                  "no test_accuracy", "deep", "no epochs", "float16", "sizes differ", "5 outputs"])
def test_a_tampered_run_is_refused_before_training(case, tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "2", *QUICK)) == 0
    history = json.loads((out / "history.json").read_text())
    (out / "history.json").write_text(_tamper(history, Network.load(out), tmp_path, tiny_cache, case))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run_cli("--resume", str(out), "--epochs", "1", "--data-dir", str(tiny_cache), "--offline", "--quiet")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--resume {out}" in result.stderr
    assert TAMPERED_SAYS.get(case, "") in result.stderr and "--hidden" not in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# --------------------------------------------------------------------------- the library

def _data(drop_digit: int | None = None, seed: int = 0) -> MnistData:
    def split(n, s):
        images, labels = make_digits(n, s)
        if drop_digit is not None:
            labels = np.where(labels == drop_digit, (drop_digit + 1) % 10, labels).astype(np.uint8)
        return Split(images.reshape(n, -1).astype(np.float32) / 255, labels)

    return MnistData(split(500, seed), split(100, seed + 1), split(100, seed + 2))


def test_fit_in_memory_matches_the_command_line(tiny_cache, tmp_path):
    from mnist_nn.data import load_mnist

    data = load_mnist(tiny_cache, 100, offline=True, quiet=True)
    settings = Settings(epochs=2, lr=1.0, hidden=(12,))
    seen = []
    run = fitting.fit(settings, data, on_epoch=lambda record, run: seen.append(record["epoch"]))
    assert seen == [1, 2] and run.folder is None and run.final["epoch"] == 2
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "cli", "--epochs", "2", *QUICK)) == 0
    same_weights(run.network, Network.load(tmp_path / "cli"))
    from_cli = json.loads((tmp_path / "cli" / "history.json").read_text())["epochs"]
    assert [r["test_accuracy"] for r in run.records] == [r["test_accuracy"] for r in from_cli]


def test_measuring_on_one_core_is_the_same_run(tmp_path):
    """What a sweep worker does (measure between epochs, no second thread): the same weights, records
    and checkpoints as measuring on a second thread."""
    settings = Settings(epochs=3, lr=1.0, hidden=(12,), patience=0)
    threads = fitting.fit(settings, _data(), out=tmp_path / "threads")
    inline = fitting.fit(settings, _data(), out=tmp_path / "inline", measure_in_background=False)
    same_weights(threads.network, inline.network)
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert drop(threads.records) == drop(inline.records)
    assert drop(runfolder.load(tmp_path / "inline").records) == drop(inline.records)


def test_a_digit_never_predicted_is_warned_about_and_recorded(tmp_path):
    """A training set without any 7: the network never predicts 7, and the run says so once."""
    run = fitting.fit(Settings(epochs=8, hidden=(12,)), _data(drop_digit=7), out=tmp_path / "run")
    sevens = [w for w in run.warnings if w["digit"] == 7]
    assert len(sevens) == 1 and sevens[0]["epoch"] == fitting.STUCK_EPOCHS and "recovered_epoch" not in sevens[0]
    assert "digit 7 has not been predicted" in sevens[0]["message"] and "--seed" in sevens[0]["message"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["warnings"] == run.warnings
    healthy = fitting.fit(Settings(epochs=8, hidden=(12,)), _data())
    assert healthy.warnings == []


def test_the_package_exports_fit_and_settings(tiny_cache):
    import mnist_nn
    from mnist_nn.data import load_mnist

    run = mnist_nn.fit(mnist_nn.Settings(epochs=1, hidden=(8,), lr=1.0), load_mnist(tiny_cache, 100, offline=True))
    assert isinstance(run, mnist_nn.Run) and run.final["epoch"] == 1
    assert mnist_nn.resume is fitting.resume
