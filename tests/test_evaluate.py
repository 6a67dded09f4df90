"""The evaluate command: scores labelled as what they are, MODEL as a run folder, runs/latest or best.npz,
--plots folders that cannot be written, bounded pictures, bad flags and metadata, pipes and odd names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from mnist_nn import evaluate, load_mnist
from mnist_nn.functions import softmax
from mnist_nn.network import Network

REPO = Path(__file__).resolve().parent.parent


def data_flags(cache) -> list[str]:
    return ["--data-dir", str(cache), "--offline"]


def tiny_model(sizes=(784, 16, 10), **kwargs) -> Network:
    """Random weights (the answers do not matter here), with the validation split the tiny data allows."""
    net = Network(sizes, seed=kwargs.pop("seed", 0), **kwargs)
    net.metadata = {"training": {"validation_size": 100}}
    return net


def test_cross_entropy_mistakes_are_probabilities_through_runs_latest_best_npz(tiny_cache, tmp_path, capsys):
    run = tmp_path / "runs" / "20260101-000000"
    run.mkdir(parents=True)
    tiny_model().save(run / "model.npz")
    net = tiny_model(cost="cross-entropy", seed=1)
    net.save(run / "best.npz")
    (tmp_path / "runs" / "latest").symlink_to(run.name)
    assert evaluate.main([str(tmp_path / "runs" / "latest" / "best.npz"), "--json", *data_flags(tiny_cache)]) == 0
    result = json.loads(capsys.readouterr().out)
    test = load_mnist(tiny_cache, validation_size=0, download=False).test
    probabilities = softmax(net.output_z(test.images))
    assert result["accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == test.labels))
    assert result["score"] == "probability" and result["most_confident_mistakes"]
    listed = [m["probability"] for m in result["most_confident_mistakes"]]
    assert listed == [pytest.approx(float(probabilities[m["index"], m["predicted"]]), rel=1e-5)
                      for m in result["most_confident_mistakes"]]
    assert listed == sorted(listed, reverse=True)
    assert evaluate.main([str(tmp_path / "runs" / "latest"), *data_flags(tiny_cache)]) == 0  # its model.npz
    text = capsys.readouterr().out
    assert "most confident mistakes (output: the sigmoid outputs" in text and "not probabilities" in text
    assert "index  true  predicted       output" in text


def test_plots_into_a_file_an_unwritable_folder_or_proc_is_one_line_before_any_work(tmp_path, capsys):
    Network((784, 16, 10), seed=0).save(tmp_path / "model.npz")
    (tmp_path / "taken").write_text("a file")
    no_data = ["--data-dir", str(tmp_path / "no-data"), "--offline"]  # the data would fail next: --plots is first
    for target, problem in ((tmp_path / "taken", "is a file, not a folder"),
                            (tmp_path / "taken" / "plots", "cannot write there (Not a directory)"),
                            (Path("/proc/x"), "cannot write there")):
        assert evaluate.main([str(tmp_path / "model.npz"), "--plots", str(target), *no_data]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert f"--plots {target}: {problem}" in captured.err
    assert evaluate.main([str(tmp_path / "model.npz"), "--plots", str(tmp_path / "new"), *no_data]) == 1
    assert "--offline" in capsys.readouterr().err and not (tmp_path / "new").exists()  # nothing left behind


def test_mistakes_must_not_be_negative(tmp_path, capsys):
    Network((784, 16, 10), seed=0).save(tmp_path / "model.npz")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(tmp_path / "model.npz"), "--mistakes", "-5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mistakes: -5 is less than 0" in err


def test_plots_of_a_wide_model_draw_at_most_100_hidden_units_and_say_so(tiny_cache, tmp_path, capsys):
    tiny_model((784, 300, 10)).save(tmp_path / "wide.npz")
    assert evaluate.main([str(tmp_path / "wide.npz"), "--plots", str(tmp_path / "plots"), *data_flags(tiny_cache)]) == 0
    out = capsys.readouterr().out
    assert "note: hidden_weights.png shows the first 100 of the model's 300 hidden units" in out
    height = imread(tmp_path / "plots" / "hidden_weights.png").shape[0]
    assert 1000 < height < 1400  # 10 rows of pictures (all 300 would be 30 rows, 3900 pixels)


@pytest.mark.parametrize("training", ["x", {"validation_size": 70_000}, {"validation_size": "x"}])
def test_odd_training_metadata_is_refused_in_one_line(tiny_cache, tmp_path, capsys, training):
    net = Network((784, 16, 10), seed=0)
    net.metadata = {"training": training}
    net.save(tmp_path / "odd.npz")
    for split in ("validation", "test"):
        assert evaluate.main([str(tmp_path / "odd.npz"), "--split", split, *data_flags(tiny_cache)]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert "odd.npz: the model's metadata training" in captured.err and "Traceback" not in captured.err


def test_a_model_with_5_outputs_does_not_fit(tiny_cache, tmp_path, capsys):
    tiny_model((784, 16, 5)).save(tmp_path / "five.npz")
    assert evaluate.main([str(tmp_path / "five.npz"), *data_flags(tiny_cache)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "five.npz: the model has 5 outputs, but MNIST has 10 digits" in captured.err


def test_a_closed_pipe_ends_evaluate_json_quietly(tiny_cache, tmp_path):
    """`evaluate --json | head -c 100`: the reader is gone; no BrokenPipeError traceback."""
    tiny_model().save(tmp_path / "model.npz")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "mnist_nn.evaluate", str(tmp_path / "model.npz"), "--json",
                                 *data_flags(tiny_cache)], cwd=REPO, stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode in (0, 1)


def test_a_model_name_that_is_not_utf8_on_a_strict_terminal(tiny_cache, tmp_path):
    latin1 = os.fsencode(tmp_path) + b"/mod\xe8le.npz"
    tiny_model().save(os.fsdecode(latin1))
    result = subprocess.run([sys.executable.encode(), b"-m", b"mnist_nn.evaluate", latin1,
                             *map(os.fsencode, data_flags(tiny_cache))], cwd=REPO, capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert result.stdout.decode("utf-8").startswith(os.fsdecode(tmp_path) + "/mod\\udce8le.npz: test accuracy")
