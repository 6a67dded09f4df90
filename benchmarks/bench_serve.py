"""How fast the playground answers a drawing: ``POST /api/predict`` latency (p50, p99) and requests per
second over loopback, one client and eight concurrent ones, for a canvas PNG and for 784 pixels.

    python benchmarks/bench_serve.py --runs runs --model 20260101-120000 [--requests 1000]
        [--json bench_serve.json] [--plot bench_serve.png] [--data-dir D --offline]

It starts ``python -m mnist_nn.serve`` on a free 127.0.0.1 port, as a user would, and sends each request
on a kept-alive connection per client (as a browser does) with Python's http.client; the clients share
the machine with the server, as the page does. Without ``--model``, the first model listed is used; with
no model under ``--runs`` the benchmark trains one epoch of the classic 784-30-10 network there first.
The PNG is a canvas-sized drawing (an MNIST test digit scaled up to 140x140), as the page sends it.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

AIM_P50_MS, AIM_P99_MS = 5.0, 20.0  # the aim for one client


def start_server(runs: Path, data_flags: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "mnist_nn.serve", "--runs", str(runs), "--port", "0", *data_flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if selector.select(120) else ""
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, int(line.split(" at ")[1].split()[0].rsplit(":", 1)[1].strip("/"))


CANVAS_SIDE = 140  # the page's canvas (index.html), in pixels; shown at twice that size


def canvas_png(digit) -> str:
    """An MNIST digit scaled up to the page's canvas, white ink on black, as base64 PNG."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray((np.asarray(digit).reshape(28, 28) * 255).astype(np.uint8)).resize((CANVAS_SIDE, CANVAS_SIDE), Image.BILINEAR)
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="PNG")  # a canvas's toDataURL gives RGBA
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def client(port: int, body: bytes, n: int, latencies: list[float], failures: list[str]) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"}
    try:
        for _ in range(n):
            started = time.perf_counter()
            connection.request("POST", "/api/predict", body, headers)
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                failures.append(str(response.status))
    finally:
        connection.close()


def measure(port: int, body: bytes, requests: int, clients: int) -> dict:
    client(port, body, 20, [], [])  # warm up: the model loaded, the connection's first costs paid
    per_client = [[] for _ in range(clients)]
    failures: list[str] = []
    threads = [threading.Thread(target=client, args=(port, body, requests // clients, per_client[i], failures))
               for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed (status {failures[0]})")
    latencies = sorted(s for c in per_client for s in c)
    return {"clients": clients, "requests": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "mean_ms": 1000 * statistics.fmean(latencies), "requests_per_second": len(latencies) / wall,
            "latencies_ms": [round(1000 * s, 3) for s in latencies]}


def browser_round_trips(port: int, model: str, drawings: int) -> dict:
    """Draw ``drawings`` digits on the page in headless Chromium (Selenium pointer actions, as the browser
    test does) and collect the page's own measure of each answer: from the stroke that asked to the
    answer shown (canvas.toDataURL, the request, the bars, the 28x28 input and the hidden units drawn)."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                 f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        picker = driver.find_element(By.CSS_SELECTOR, "[data-testid=model-select]")
        wait.until(lambda _: picker.get_attribute("data-count") not in (None, "0"))
        driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))",
                              picker, model)
        canvas = driver.find_element(By.CSS_SELECTOR, "[data-testid=draw-canvas]")
        for _ in range(drawings):
            driver.find_element(By.CSS_SELECTOR, "[data-testid=clear]").click()
            before = int(canvas.get_attribute("data-answers") or 0)
            strokes = ActionChains(driver).move_to_element_with_offset(canvas, -70, -90).click_and_hold()
            for x, y in ((0, -90), (70, -90), (35, -20), (5, 50), (-10, 100)):
                strokes.move_to_element_with_offset(canvas, x, y)
            strokes.release().perform()
            wait.until(lambda _: int(canvas.get_attribute("data-answers") or 0) > before)
        times = sorted(driver.execute_script("return window.roundtripsMs || []"))
    finally:
        driver.quit()
    return {"answers": len(times), "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))], "max_ms": times[-1]}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mnist_nn.plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        ms = r["latencies_ms"]
        ax.plot(ms, [100 * (i + 1) / len(ms) for i in range(len(ms))], label=f"{r['input']}, {r['clients']} client(s)")
    ax.axvline(AIM_P50_MS, color="grey", linestyle=":")
    ax.axvline(AIM_P99_MS, color="grey", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("latency of POST /api/predict (ms, log scale)")
    ax.set_ylabel("requests answered within (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="the run folders to serve [default runs]")
    parser.add_argument("--model", help="the model ID to ask [default: the first listed]")
    parser.add_argument("--requests", type=int, default=1000, help="requests per measurement [default 1000]")
    parser.add_argument("--quick", action="store_true", help="100 requests (a smoke test)")
    parser.add_argument("--browser", type=int, default=0, metavar="N",
                        help="also draw N digits on the page in headless Chromium (needs selenium, /usr/bin/chromium "
                             "and /usr/bin/chromedriver) and report the page's stroke-to-answer times")
    common.add_shared_flags(parser, "write the results as JSON to PATH", "write the latency curves to PATH (PNG)")
    args = parser.parse_args(argv)
    common.check_outputs(args.json, args.plot)
    requests = 100 if args.quick else args.requests
    data_flags = [*(["--data-dir", args.data_dir] if args.data_dir else []),
                  *(f"--mirror={m}" for m in args.mirror or []), *(["--offline"] if args.offline else [])]

    from mnist_nn.cli import load_data

    data = load_data(args, 0, quiet=True)
    runs = Path(args.runs)
    if not args.model and not any((p / "model.npz").is_file() for p in (runs.iterdir() if runs.is_dir() else [])):
        from mnist_nn import Settings, fit

        print(f"no model under {runs}: training one epoch of 784-30-10 there first", file=sys.stderr)
        fit(Settings(epochs=1, validation_size=0), data, out=runs / "bench-serve-model")

    proc, port = start_server(runs, data_flags)
    try:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/api/models")
        models = json.loads(connection.getresponse().read())["models"]
        connection.close()
        model = args.model or models[0]["id"]
        digit = data.test.images[0]
        bodies = {f"canvas PNG {CANVAS_SIDE}x{CANVAS_SIDE}": json.dumps({"model": model, "png": canvas_png(digit)}).encode(),
                  "784 pixels": json.dumps({"model": model, "pixels": [round(float(v), 4) for v in digit]}).encode()}
        records = []
        for name, body in bodies.items():
            for clients in (1, 8):
                records.append({"input": name, "body_bytes": len(body), **measure(port, body, requests, clients)})
        page = browser_round_trips(port, model, args.browser) if args.browser else None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    print(common.header("POST /api/predict on loopback", 1))
    print(f"model {model}; {requests} requests per row; aim for one client: p50 <= {AIM_P50_MS:g} ms, "
          f"p99 <= {AIM_P99_MS:g} ms\n")
    rows = [[r["input"], f"{r['body_bytes']:,}", str(r["clients"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
             f"{r['requests_per_second']:.0f}"] for r in records]
    print(common.markdown_table(["input", "body bytes", "clients", "p50 ms", "p99 ms", "requests/s"], rows))
    if page:
        print(f"\nthe page in headless Chromium, {args.browser} digits drawn, {page['answers']} answers: stroke to "
              f"answer shown p50 {page['p50_ms']:.1f} ms, p99 {page['p99_ms']:.1f} ms, max {page['max_ms']:.1f} ms")
    if args.json:
        from mnist_nn.fileio import write_text

        write_text(args.json, json.dumps({"machine": common.machine(), "model": model, "records": records,
                                          "browser": page}, indent=1))
    if args.plot:
        plot(records, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
