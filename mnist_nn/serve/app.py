"""The playground's Starlette app: the JSON API the page uses (and nothing else does), the page itself
as static files, and the security rules as middleware (:mod:`mnist_nn.serve.security`).

    GET  /api/models                              every model under --runs, with its test accuracy
    POST /api/predict      {"model", "png"|"pixels"}   digit, outputs, input28, hidden
    GET  /api/models/ID/units/K                   hidden unit K's 28x28 incoming weights
    GET  /api/models/ID/evaluation                test accuracy, confusion matrix, mistakes, learning curve
    GET  /api/models/ID/confusion/T/P             the test images of digit T predicted as P
    GET  /api/settings                            the training form: every setting, its default and help
    POST /api/train        {setting: value, ...}  start a training (409 while one runs)
    GET  /api/train/JOB                           its state
    GET  /api/train/JOB/events                    its events, as server-sent events
    POST /api/train/JOB/stop                      stop it; the finished epochs are kept

Every error is a JSON ``{"error": message}`` with a 4xx status: 400 a malformed request, 404 an unknown
model, job or path, 409 a training already running, 413 a body too large, 415 not JSON, 422 an image or
model file that cannot be used, 503 the MNIST data unavailable.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mnist_nn.errors import ImageError, MnistError, MnistNNError, ModelFileError, UsageError
from mnist_nn.serve import draw, form, security
from mnist_nn.serve.explore import Explorer
from mnist_nn.serve.jobs import Busy, Trainer
from mnist_nn.serve.models import Models, UnknownModel

STATIC = Path(__file__).parent / "static"
STATUS = ((UnknownModel, 404), (Busy, 409), (ImageError, 422), (ModelFileError, 422), (MnistError, 503),
          (UsageError, 400), (MnistNNError, 422))


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def status_of(exc: MnistNNError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested past the parser's depth
        raise UsageError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UsageError(f"the request body must be a JSON object, got a {type(body).__name__}")
    return body


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise UsageError(f"{what} must be a whole number, got {text[:20]!r}")
    return int(text)


def create_app(runs, load_data, host: str = "127.0.0.1", extra_hosts: list[str] | None = None,
               max_body: int = security.MAX_BODY_BYTES) -> Starlette:
    """The app serving the run folders under ``runs``. ``load_data(settings)`` returns an ``MnistData``
    for a training (``fit``'s ``data=``); the test split for evaluations comes from the same function."""
    if not (STATIC / "index.html").is_file():
        raise MnistNNError(f"the page's files are missing from this install ({STATIC}); reinstall mnist_nn "
                           f"(pip install \".[serve]\")")
    models = Models(Path(runs))
    explorer = Explorer(models, lambda: load_data(None).test)
    trainer = Trainer(Path(runs), load_data)

    async def list_models(request):
        listing = await run_in_threadpool(models.listing)
        current = trainer.current()
        return JSONResponse({**listing, "training": current.run_id if current else None})

    def predict(body: dict) -> dict:
        net, _ = models.network(body.get("model"))
        digit, notes = draw.digit_of(body)
        return {"model": body["model"], **draw.answer(net, digit), **({"notes": notes} if notes else {})}

    async def post_predict(request):
        body = await json_body(request)
        return JSONResponse(await run_in_threadpool(predict, body))

    async def unit(request):
        model_id, k = request.path_params["model"], _int(request.path_params["unit"], "unit")
        net, _ = await run_in_threadpool(models.network, model_id)
        return JSONResponse({"model": model_id, **draw.unit_weights(net, k)})

    async def evaluation(request):
        return JSONResponse(await run_in_threadpool(explorer.evaluation, request.path_params["model"]))

    async def confusion_cell(request):
        p = request.path_params
        true, predicted = _int(p["true"], "the true digit"), _int(p["predicted"], "the predicted digit")
        return JSONResponse(await run_in_threadpool(explorer.cell, p["model"], true, predicted))

    async def settings_form(request):
        return JSONResponse({"fields": await run_in_threadpool(form.fields)})

    async def start_training(request):
        settings = form.settings_from_json(await json_body(request))
        job = await run_in_threadpool(trainer.start, settings)
        return JSONResponse(job.describe(), status_code=202)

    def job_of(request):
        job = trainer.get(request.path_params["job"])
        if job is None:
            raise HTTPException(404, f"no training job {request.path_params['job'][:40]!r}")
        return job

    async def job_state(request):
        return JSONResponse(job_of(request).describe())

    async def job_events(request):
        job = job_of(request)
        last = request.headers.get("last-event-id", "")  # a reconnecting EventSource goes on from there
        start = int(last) + 1 if last.isdigit() and len(last) < 10 else 0
        return StreamingResponse(job.stream(start, request.is_disconnected), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def stop_job(request):
        await json_body(request)  # a body ({} will do), so that the Content-Type rule covers stop too
        job = job_of(request)
        job.stop_requested.set()
        return JSONResponse(job.describe(), status_code=202)

    async def known_error(request, exc: MnistNNError):
        return error(status_of(exc), str(exc))

    async def http_error(request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such page or API endpoint: {request.url.path[:100]}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed here (CORS preflights are not answered)"
        return error(exc.status_code, message)

    async def internal_error(request, exc: Exception):
        # A bug, not the user's doing: the traceback goes to the server's terminal, the client gets one line.
        return error(500, f"internal error ({type(exc).__name__}); see the server's output")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        trainer.stop_all()  # the server is going: the training keeps its finished epochs
        await run_in_threadpool(trainer.wait)

    routes = [
        Route("/api/models", list_models),
        Route("/api/predict", post_predict, methods=["POST"]),
        Route("/api/models/{model:path}/units/{unit}", unit),
        Route("/api/models/{model:path}/evaluation", evaluation),
        Route("/api/models/{model:path}/confusion/{true}/{predicted}", confusion_cell),
        Route("/api/settings", settings_form),
        Route("/api/train", start_training, methods=["POST"]),
        Route("/api/train/{job}", job_state),
        Route("/api/train/{job}/events", job_events),
        Route("/api/train/{job}/stop", stop_job, methods=["POST"]),
        Mount("/", StaticFiles(directory=STATIC, html=True)),
    ]
    app = Starlette(routes=routes, middleware=security.middleware(host, extra_hosts, max_body), lifespan=lifespan,
                    exception_handlers={MnistNNError: known_error, HTTPException: http_error,
                                        Exception: internal_error})
    app.state.trainer, app.state.models = trainer, models
    return app
