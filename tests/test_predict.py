"""The predict command: folders of images, JSON lines, scores labelled as what they are, models that do not
fit MNIST, output folders that cannot be written, closed pipes and file names that are not UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_nn import predict
from mnist_nn.functions import sigmoid, softmax
from mnist_nn.images import read_digit
from mnist_nn.network import Network

REPO = Path(__file__).resolve().parent.parent


def draw(path: Path, digit: str = "7") -> Path:
    sheet = Image.new("L", (120, 160), 255)
    draw = ImageDraw.Draw(sheet)
    if digit == "7":
        draw.line([(30, 40), (90, 40), (55, 130)], fill=0, width=10)
    else:  # a 1
        draw.line([(60, 30), (60, 130)], fill=0, width=10)
    sheet.save(path)
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    return Network((784, 16, 10), seed=0).save(tmp_path / "model.npz")


def lines_and_errors(capsys):
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def test_a_folder_means_its_images_sorted_and_json_is_json_lines(tmp_path, model, capsys):
    """Also: MODEL may be a run folder, a path through the runs/latest symlink, or a best.npz."""
    run = tmp_path / "runs" / "20260101-000000"
    run.mkdir(parents=True)
    net = Network.load(model)
    net.save(run / "model.npz")
    Network((784, 16, 10), seed=1).save(run / "best.npz")
    (tmp_path / "runs" / "latest").symlink_to(run.name)
    digits = tmp_path / "digits"
    digits.mkdir()
    for name in ("b.png", "a.png", "c.png"):
        draw(digits / name, "1" if name == "b.png" else "7")
    (digits / "README.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    for given, weights in ((tmp_path / "runs" / "latest", net), (run / "best.npz", Network.load(run / "best.npz"))):
        assert predict.main([str(given), str(digits), str(tmp_path / "empty"), "--json"]) == 1
        out, err = lines_and_errors(capsys)
        results = [json.loads(line) for line in out]
        assert [Path(r["file"]).name for r in results] == ["a.png", "b.png", "c.png"]
        for r in results:
            z = weights.output_z(read_digit(r["file"]).reshape(1, -1))[0]
            assert r["prediction"] == int(z.argmax())
            assert r["top"][0]["output"] == pytest.approx(float(sigmoid(z).max()), rel=1e-5)
        assert len(err) == 1 and "empty: a folder without image files" in err[0]


def test_scores_are_sigmoid_outputs_or_softmax_probabilities_by_cost(tmp_path, capsys):
    image = draw(tmp_path / "seven.png")
    z_of = {}
    for cost in ("quadratic", "cross-entropy"):
        net = Network((784, 16, 10), cost=cost, seed=2)
        net.save(tmp_path / f"{cost}.npz")
        z_of[cost] = net.output_z(read_digit(image).reshape(1, -1))[0]
    assert predict.main([str(tmp_path / "quadratic.npz"), str(image)]) == 0
    out, _ = lines_and_errors(capsys)
    assert "sigmoid outputs" in out[0] and "not probabilities" in out[0] and "%" not in out[1]
    best = np.argsort(-z_of["quadratic"])[:3]
    assert out[1].endswith("(outputs " + ", ".join(f"{d} {sigmoid(z_of['quadratic'][d]):.3f}" for d in best) + ")")
    assert predict.main([str(tmp_path / "cross-entropy.npz"), str(image), "--json"]) == 0
    out, _ = lines_and_errors(capsys)
    result = json.loads(out[0])
    assert result["score"] == "probability"
    expected = softmax(z_of["cross-entropy"])
    assert [t["probability"] for t in result["top"]] == [pytest.approx(float(expected[t["digit"]]), rel=1e-5)
                                                         for t in result["top"]]
    assert predict.main([str(tmp_path / "cross-entropy.npz"), str(image)]) == 0
    out, _ = lines_and_errors(capsys)
    assert "softmax probabilities" in out[0] and out[1].count("%") == 3


@pytest.mark.parametrize("sizes, problem", [((100, 16, 10), "takes 100 inputs, but an MNIST image has 784 pixels"),
                                            ((784, 16, 5), "has 5 outputs, but MNIST has 10 digits"),
                                            ((784, 16, 10), "NaN or infinite")])
def test_a_model_that_does_not_fit_mnist_is_one_line(tmp_path, capsys, sizes, problem):
    net = Network(sizes, seed=0)
    if problem == "NaN or infinite":
        net.weights[1][3, 4] = np.nan
    net.save(tmp_path / "odd.npz")
    assert predict.main([str(tmp_path / "odd.npz"), str(draw(tmp_path / "seven.png")), "--json"]) == 1
    out, err = lines_and_errors(capsys)
    assert out == [] and len(err) == 1 and problem in err[0] and "odd.npz" in err[0]


def test_show_input_into_a_file_or_an_unwritable_path_is_one_line(tmp_path, model, capsys):
    image = draw(tmp_path / "seven.png")
    (tmp_path / "taken").write_text("a file")
    for target, problem in ((tmp_path / "taken", "is a file, not a folder"),
                            (tmp_path / "taken" / "sub", "cannot write there (Not a directory)"),
                            (Path("/proc/x"), "cannot write there")):
        assert predict.main([str(model), str(image), "--show-input", str(target)]) == 1
        out, err = lines_and_errors(capsys)
        assert out == [] and len(err) == 1 and f"--show-input {target}: {problem}" in err[0]
    assert predict.main([str(model), str(image), "--show-input", str(tmp_path / "seen")]) == 0
    seen = np.asarray(Image.open(tmp_path / "seen" / "seven.28x28.png"))
    np.testing.assert_array_equal(seen, (read_digit(image) * 255).round().astype(np.uint8))


def test_a_closed_pipe_ends_predict_quietly(tmp_path, model):
    """`predict ... | head -2`: the reader is gone; Python's BrokenPipeError must not become a traceback."""
    image = draw(tmp_path / "seven.png")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before predict wrote (head -2 after its two lines, at once)
    try:
        result = subprocess.run([sys.executable, "-m", "mnist_nn.predict", str(model), *[str(image)] * 5],
                                cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode in (0, 1)


def test_file_names_that_are_not_utf8_on_a_strict_terminal(tmp_path, model):
    folder = os.fsencode(tmp_path)
    latin1 = folder + b"/caf\xe9.png"  # Latin-1, as an old camera or a Windows zip writes it
    draw(Path(os.fsdecode(latin1)))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable.encode(), b"-m", b"mnist_nn.predict", os.fsencode(model), latin1,
                                 folder + b"/missing-caf\xe9.png", *extra], cwd=REPO, capture_output=True,
                                timeout=120, env=env)
        assert result.returncode == 1 and b"Traceback" not in result.stderr, result.stderr
        out = result.stdout.decode("utf-8").splitlines()
        if extra:
            assert os.fsencode(json.loads(out[0])["file"]) == latin1  # the name round-trips exactly
        else:
            assert "caf\\udce9.png: " in out[1]
        assert result.stderr.decode("utf-8").count("\n") == 1 and b"missing-caf" in result.stderr


def test_a_model_name_too_long_for_the_file_system_is_one_line(tmp_path, model, capsys):
    from mnist_nn import evaluate

    long_name = str(tmp_path / ("m" * 300 + ".npz"))  # past NAME_MAX: stat and is_dir raise ENAMETOOLONG
    draw(tmp_path / "seven.png")
    for main, argv in ((predict.main, [long_name, str(tmp_path / "seven.png")]),
                       (evaluate.main, [long_name, "--offline", "--data-dir", str(tmp_path)])):
        assert main(argv) == 1
        out, err = lines_and_errors(capsys)
        assert len(err) == 1 and "File name too long" in err[0] and "Traceback" not in err[0], err
