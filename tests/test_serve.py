"""The playground's API against a real uvicorn server (``python -m mnist_nn.serve`` in a subprocess on a
free 127.0.0.1 port) on tiny data: predictions equal the library's own (``images`` preprocessing,
``Network``), evaluations equal ``evaluate``'s, and every security rule. (Training: test_serve_training.py;
the page in a real browser: test_serve_browser.py.)"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import selectors
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import TinyMnist, write_trusted_cache
from mnist_nn.data import MnistData, Split
from mnist_nn.settings import Settings
from trainproc import default_signals

STARTUP_S = 120  # a guard against a server that never says its address, not a timing


def need_extra(*modules: str) -> None:
    """Skip (fail under MNIST_NN_REQUIRE_EXTRAS=1, as CI sets) when the serve extra is not installed."""
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            message = f"needs {name} from the serve extra: pip install \".[serve]\""
            if os.environ.get("MNIST_NN_REQUIRE_EXTRAS") == "1":
                pytest.fail(message)
            pytest.skip(message)


# --------------------------------------------------------------------------- the server and a client

def tiny_cache(folder: Path, tiny: TinyMnist) -> Path:
    """The tiny IDX files with stamps that vouch for them (as conftest's tiny_cache, for a module)."""
    return write_trusted_cache(folder, tiny)


def tiny_data(tiny: TinyMnist, validation_size: int = 100) -> MnistData:
    """The tiny set as load_mnist gives it."""
    a = tiny.arrays
    train_x = a["train-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / np.float32(255)
    train_y = a["train-labels-idx1-ubyte"]
    test_x = a["t10k-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / np.float32(255)
    cut = len(train_y) - validation_size
    return MnistData(Split(train_x[:cut], train_y[:cut]), Split(train_x[cut:], train_y[cut:]),
                     Split(test_x, a["t10k-labels-idx1-ubyte"]))


class Server:
    """``python -m mnist_nn.serve`` in its own session with default signal dispositions; killed by close()."""

    def __init__(self, runs: Path, cache: Path, *extra: str):
        self.runs = runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_nn.serve", "--runs", str(runs), "--port", "0", "--data-dir", str(cache),
             "--offline", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, start_new_session=True, preexec_fn=default_signals)
        self.first_line = self._first_line()
        self.url = self.first_line.split(" at ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def _first_line(self) -> str:
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(STARTUP_S):
                raise AssertionError("the server printed no address")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the server ended: {self.proc.stderr.read()}")
        return line

    def request(self, method: str, path: str, body=None, headers=None, host: str | None = None):
        """(status, headers, parsed JSON or the raw bytes) of one request on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            headers = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers.setdefault("Content-Type", "application/json")
            chunked = body is not None and not isinstance(body, bytes)
            if chunked:
                headers["Transfer-Encoding"] = "chunked"
            elif body is not None:
                headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                connection.putheader(key, value)
            connection.endheaders()
            if chunked:
                for chunk in body:
                    connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            elif body is not None:
                connection.send(body)
            response = connection.getresponse()
            raw = response.read()
            kind = response.getheader("Content-Type", "")
            return response.status, response.headers, json.loads(raw) if kind.startswith("application/json") else raw
        finally:
            connection.close()

    def post(self, path: str, body):
        return self.request("POST", path, body)

    def events(self, job: str, until=lambda event: event["kind"] == "end"):
        """The job's server-sent events, read as they come, until ``until(event)``."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        connection.request("GET", f"/api/train/{job}/events", headers={"Host": f"127.0.0.1:{self.port}"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        seen = []
        try:
            for line in response.fp:
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
                    if until(seen[-1]):
                        return seen
            return seen
        finally:
            connection.close()

    def close(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=60)
        return out, err


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server over runs/ holding one tiny run trained by fit(), and that run's data."""
    need_extra("starlette", "uvicorn")
    from mnist_nn import fit

    root = tmp_path_factory.mktemp("serve")
    tiny = TinyMnist(n_train=500, n_test=200)
    cache = tiny_cache(root / "cache", tiny)
    data = tiny_data(tiny)
    fit(Settings(epochs=2, hidden=(16,), validation_size=100), data, out=root / "runs" / "tiny-run")
    server = Server(root / "runs", cache)
    server.tiny, server.data, server.cache = tiny, data, cache
    try:
        yield server
    finally:
        server.close()


def png_of_seven(size=(200, 200), background=0, ink=255) -> bytes:
    sheet = Image.new("L", size, background)
    ImageDraw.Draw(sheet).line([(50, 40), (150, 40), (90, 170)], fill=ink, width=14)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- drawing and predicting

def test_models_are_listed_with_their_test_accuracy(site):
    from mnist_nn.network import Network

    status, _, listing = site.request("GET", "/api/models")
    assert status == 200
    assert [m["id"] for m in listing["models"]] == ["tiny-run"]
    net = Network.load(site.runs / "tiny-run" / "model.npz")
    model = listing["models"][0]
    assert model["test_accuracy"] == net.metadata["test_accuracy"] and model["sizes"] == [784, 16, 10]
    assert model["score"] == "output" and "not probabilities" in model["score_meaning"]


def test_a_prediction_is_the_predict_commands_own(site):
    """The PNG goes through images.read_digit, the pixels through images.to_mnist, and the numbers are the
    Network's: the oracle is the library itself (mnist_nn.predict's path)."""
    from mnist_nn.functions import sigmoid
    from mnist_nn.images import read_digit, to_mnist
    from mnist_nn.network import Network
    from mnist_nn.predict import classify

    net = Network.load(site.runs / "tiny-run" / "model.npz")
    png = png_of_seven(background=255, ink=0)  # dark ink on white: read_digit inverts it
    status, _, result = site.post("/api/predict", {"model": "tiny-run", "png": base64.b64encode(png).decode()})
    assert status == 200, result
    digit = read_digit(png)
    assert np.allclose(result["input28"], digit.ravel(), atol=1e-5)
    assert result["digit"] == classify(net, digit)["prediction"]
    outputs = net.cost_function.output(net.output_z(digit.reshape(1, -1)))[0]
    assert np.allclose(result["outputs"], outputs, atol=1e-5)
    hidden = sigmoid(net.weights[0] @ digit.ravel() + net.biases[0])
    assert len(result["hidden"]) == 1 and np.allclose(result["hidden"][0], hidden, atol=1e-5)
    z = np.array(result["hidden"][-1]) @ net.weights[-1].T + net.biases[-1]  # the layer the outputs come from
    assert np.allclose(net.cost_function.output(z[None, :])[0], result["outputs"], atol=1e-4)

    data_url = "data:image/png;base64," + base64.b64encode(png).decode()  # what canvas.toDataURL gives
    assert site.post("/api/predict", {"model": "tiny-run", "png": data_url})[2]["input28"] == result["input28"]

    pixels = np.zeros((28, 28))
    pixels[4:22, 10:13] = 1.0  # a thin, off-centre 1: to_mnist scales and centres it
    status, _, result = site.post("/api/predict", {"model": "tiny-run", "pixels": pixels.ravel().tolist()})
    assert status == 200, result
    assert np.allclose(result["input28"], to_mnist(pixels.astype(np.float32)).ravel(), atol=1e-5)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_every_hidden_layer_is_shown_as_the_network_computes_it(site, batch_norm):
    """Two hidden layers (and batch normalisation where this mnist_nn has it): the outputs follow from the
    last hidden layer shown, and the digit is the network's own prediction."""
    import inspect

    from mnist_nn.network import Network

    if batch_norm and "batch_norm" not in inspect.signature(Network).parameters:
        pytest.skip("this mnist_nn's Network has no batch_norm")
    name = f"deep-{'bn' if batch_norm else 'plain'}"
    (site.runs / name).mkdir()
    net = Network((784, 12, 8, 10), seed=1, **({"batch_norm": True} if batch_norm else {}))
    net.save(site.runs / name / "model.npz")
    pixels = np.zeros((28, 28))
    pixels[6:20, 8:20] = np.eye(14, 12)[::-1] * 0.9  # a stroke
    status, _, result = site.post("/api/predict", {"model": name, "pixels": pixels.ravel().tolist()})
    assert status == 200, result
    assert [len(h) for h in result["hidden"]] == [12, 8]
    z = np.array(result["hidden"][-1]) @ net.weights[-1].T + net.biases[-1]
    assert np.allclose(net.cost_function.output(z[None, :])[0], result["outputs"], atol=1e-4)
    assert result["digit"] == int(net.predict(np.array(result["input28"])[None, :])[0])


def test_a_hidden_units_weights_are_the_models(site):
    from mnist_nn.network import Network

    net = Network.load(site.runs / "tiny-run" / "model.npz")
    status, _, unit = site.request("GET", "/api/models/tiny-run/units/5")
    assert status == 200 and np.allclose(unit["weights"], net.weights[0][5], atol=1e-5)
    assert site.request("GET", "/api/models/tiny-run/units/16")[0] == 400
    assert site.request("GET", "/api/models/tiny-run/units/-1")[0] == 400


def test_the_evaluation_is_evaluates_and_a_cell_holds_its_images(site):
    from mnist_nn.evaluate import evaluate
    from mnist_nn.network import Network

    net = Network.load(site.runs / "tiny-run" / "model.npz")
    test_x, test_y = site.data.test
    expected = evaluate(net, test_x, test_y, 24)
    status, _, result = site.request("GET", "/api/models/tiny-run/evaluation")
    assert status == 200, result
    assert result["accuracy"] == expected["accuracy"] and result["confusion_matrix"] == expected["confusion_matrix"]
    assert [m["index"] for m in result["most_confident_mistakes"]] == \
        [m["index"] for m in expected["most_confident_mistakes"]]
    history = json.loads((site.runs / "tiny-run" / "history.json").read_text())["epochs"]
    assert [r["test_accuracy"] for r in result["learning_curve"]["epochs"]] == [r["test_accuracy"] for r in history]
    matrix = np.array(expected["confusion_matrix"])
    true, predicted = np.unravel_index(np.argmax(matrix - np.diag(np.diag(matrix)) + np.eye(10) * -1), matrix.shape)
    status, _, cell = site.request("GET", f"/api/models/tiny-run/confusion/{true}/{predicted}")
    assert status == 200 and cell["count"] == matrix[true, predicted]
    for image in cell["images"]:
        pixels = np.frombuffer(base64.b64decode(image["pixels"]), dtype=np.uint8)
        assert np.array_equal(pixels, site.tiny.arrays["t10k-images-idx3-ubyte"][image["index"]].ravel())
        assert test_y[image["index"]] == true
    assert site.request("GET", "/api/models/tiny-run/confusion/10/0")[0] == 400


# --------------------------------------------------------------------------- the security rules

def test_the_host_header_must_name_this_server(site):
    """DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 sends its own name as Host."""
    assert site.request("GET", "/api/models", host="evil.example")[0] == 400
    assert site.request("GET", "/", host=f"evil.example:{site.port}")[0] == 400
    assert site.request("POST", "/api/predict", {"model": "tiny-run", "pixels": [0] * 784},
                        host="evil.example")[0] == 400
    assert site.request("GET", "/api/models", host=f"localhost:{site.port}")[0] == 200
    assert site.url.startswith("http://127.0.0.1:")


def test_posts_must_be_json_and_no_preflight_is_answered(site):
    body = json.dumps({"model": "tiny-run", "pixels": [0] * 784}).encode()
    for kind in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, answer = site.request("POST", "/api/predict", body, {"Content-Type": kind} if kind else {})
        assert status == 415 and "application/json" in answer["error"]
    status, headers, answer = site.request("OPTIONS", "/api/predict", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 405 and "error" in answer
    assert not any(name.lower().startswith("access-control-") for name in headers)
    _, headers, _ = site.request("GET", "/api/models", headers={"Origin": "http://evil.example"})
    assert not any(name.lower().startswith("access-control-") for name in headers)


def test_a_body_past_the_limit_is_413_however_it_is_sent(site):
    from mnist_nn.serve.security import MAX_BODY_BYTES

    big = b'{"model": "tiny-run", "png": "' + b"A" * MAX_BODY_BYTES + b'"}'
    status, _, answer = site.request("POST", "/api/predict", big, {"Content-Type": "application/json"})
    assert status == 413 and "MiB" in answer["error"]
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))  # no Content-Length to go by
    status, _, answer = site.request("POST", "/api/predict", chunks, {"Content-Type": "application/json"})
    assert status == 413 and "error" in answer


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "JSON"),
    ({"model": "nope", "pixels": [0] * 784}, 404, "no model"),
    ({"model": "../tiny-run", "pixels": [0] * 784}, 404, "IDs"),
    ({"model": "/etc/passwd", "pixels": [0] * 784}, 404, "IDs"),
    ({"model": ["tiny-run"], "pixels": [0] * 784}, 404, "IDs"),
    ({"model": "tiny-run"}, 400, "exactly one"),
    ({"model": "tiny-run", "pixels": [0] * 783}, 400, "784"),
    ({"model": "tiny-run", "pixels": [2] * 784}, 400, "0 (black) to 1"),
    ({"model": "tiny-run", "pixels": ["a"] * 784}, 400, "numbers"),
    (b'{"model": "tiny-run", "pixels": [NaN' + b", 0" * 783 + b"]}", 400, "0 (black) to 1"),
    ({"model": "tiny-run", "pixels": [0] * 784}, 422, "no ink"),
    ({"model": "tiny-run", "png": "###"}, 400, "base64"),
    ({"model": "tiny-run", "png": base64.b64encode(png_of_seven()[:200]).decode()}, 422, "broken"),
    ({"model": "tiny-run", "png": base64.b64encode(b"%!PS-Adobe-3.0\n").decode()}, 422, "not an image"),
    ({"model": "tiny-run", "png": base64.b64encode(png_claiming(10_000, 10_000)).decode()}, 422, "megapixels"),
])
def test_bad_input_is_a_4xx_json_error(site, body, status, words):
    if isinstance(body, bytes):
        got, _, answer = site.request("POST", "/api/predict", body, {"Content-Type": "application/json"})
    else:
        got, _, answer = site.post("/api/predict", body)
    assert (got, words in answer["error"]) == (status, True), answer


def test_unknown_paths_and_methods_are_json_errors(site):
    for method, path, status in (("GET", "/api/nothing", 404), ("GET", "/api/models/nope/evaluation", 404),
                                 ("GET", "/api/models/tiny-run/units/x", 400), ("GET", "/api/train/99", 404),
                                 ("DELETE", "/api/models", 405), ("GET", "/../../etc/passwd", 404)):
        got, _, answer = site.request(method, path, b"{}" if method == "DELETE" else None,
                                      {"Content-Type": "application/json"} if method == "DELETE" else None)
        assert got == status and "error" in answer, (method, path, got, answer)
    status, headers, page = site.request("GET", "/")
    assert status == 200 and b'data-testid="draw-canvas"' in page


def test_only_loopback_is_quiet_and_the_host_names_follow_the_address():
    need_extra("starlette")
    from mnist_nn.serve.security import allowed_hosts, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert allowed_hosts("192.168.1.5", ["pi.local"]) == ["127.0.0.1", "192.168.1.5", "localhost", "pi.local"]
