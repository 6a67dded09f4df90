"""The rules every request meets before a route sees it, because a browser on this machine also runs
other sites' JavaScript, and any of them may send requests to 127.0.0.1.

* The Host header must be one of the server's own names (Starlette's ``TrustedHostMiddleware``): a
  page of evil.example whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends ``Host:
  evil.example`` and is refused.
* A request with a body must say ``Content-Type: application/json``. A cross-site ``<form>`` or a
  "simple" ``fetch`` cannot send that without a CORS preflight, and the server answers no preflight
  (OPTIONS gets 405 and no ``Access-Control-*`` header), so the browser never sends the request.
* A body is at most :data:`MAX_BODY_BYTES`, counted as it arrives (a missing or false
  Content-Length does not help): past it, 413 before the route is called.

Every refusal is a JSON ``{"error": ...}`` with a 4xx status, as every other error of the API.
"""

from __future__ import annotations

import ipaddress
import json
import socket

from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

MAX_BODY_BYTES = 4 * 2**20  # a canvas PNG as base64 is 10-50 KB; a settings object well under 1 KB
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: list[str] | None = None) -> list[str]:
    """The Host header names a request may carry: the loopback names, the address bound, and for a
    wildcard address (0.0.0.0) this machine's own name; plus ``extra`` (``--allow-host``)."""
    names = [*LOOPBACK_NAMES, host.lower()]
    if host in ("0.0.0.0", "::"):
        names += [socket.gethostname().lower(), socket.getfqdn().lower()]
    names += [name.lower() for name in extra or ()]
    return sorted(set(names))


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class JsonBodyOnly:
    """Bodies only as JSON and at most ``max_bytes`` of them (a pure ASGI middleware: it reads the body
    once, bounded, and hands it on to the app)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            return await send_error(send, 415, "send the request body as JSON with Content-Type: application/json")
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_error(send, 400, "the Content-Length header is not a number")
            if int(declared) > self.max_bytes:
                return await send_error(send, 413, self._too_large())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, if it comes

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return (f"the request body is over {self.max_bytes // 2**20} MiB; send a smaller image "
                f"(a digit needs a few hundred pixels a side)")


def middleware(host: str, extra_hosts: list[str] | None = None, max_body: int = MAX_BODY_BYTES) -> list[Middleware]:
    """The rules above, outermost first: the Host check, then the body rules."""
    return [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host, extra_hosts)),
            Middleware(JsonBodyOnly, max_bytes=max_body)]
