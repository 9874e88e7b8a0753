"""A real OpenAI-compatible chat server on 127.0.0.1, with planned faults, for tests and benchmarks.

It speaks enough of ``POST /v1/chat/completions`` (and ``GET /v1/models``) for
:class:`contagion.backends.openai_compat.OpenAIBackend` and any other OpenAI client::

    with LoopbackServer() as server:
        backend = OpenAIBackend("loopback", server.base_url)
        ...
        assert len(server.requests) == 1

What it answers is decided by a *responder*, a callable ``responder(body) -> (text, top_logprobs)``:
``body`` is the decoded JSON request, ``text`` the assistant reply and ``top_logprobs`` the candidates
for the reply's first token (``[{"token": " Yes", "logprob": -0.2}, ...]``, sent only when the request
asks for logprobs and the server was built with ``logprobs=True``) or ``None``. A responder may also
return a :class:`RawResponse` to send any status and body (error replies, odd shapes). The default,
:func:`default_responder`, is deterministic: see its docstring.

Faults (:class:`FaultPlan`) are drawn per request from a seeded generator keyed on the request's arrival
index, so a plan is reproducible for a given request order. Sleeps (hangs, slow replies, ``latency``)
wait on an event that is set when the server stops, so leaving the ``with`` block never waits for them.

Token counts are whitespace words (plus 4 per message for the prompt): stable numbers to assert on,
not a real tokenizer. Only one choice is returned per request (``n`` is ignored).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, cast

FAULT_KINDS: tuple[str, ...] = ("500", "503", "429", "timeout", "slow", "malformed", "reset")
"""Every fault a plan may draw: HTTP 500/503/429 replies, a hang past the client's timeout, a slow but
correct reply, a 200 reply whose JSON body is cut off, and a connection closed without any reply."""


@dataclass(frozen=True)
class FaultPlan:
    """Which requests fail, and how.

    Request ``i`` (0-based, in arrival order) gets ``sequence[i]`` when ``i < len(sequence)`` (``None`` =
    no fault), so a test can script the first replies exactly. Later requests fault with probability
    ``rate``, the kind drawn uniformly from ``kinds``, both from ``random.Random(f"{seed}:{i}")``.
    """

    rate: float = 0.3
    kinds: tuple[str, ...] = ("500", "timeout", "slow", "malformed")
    seed: int = 0
    sequence: tuple[str | None, ...] = ()
    hang_seconds: float = 5.0
    """How long a ``timeout`` fault holds the request before answering (bounded; ends at shutdown)."""
    slow_seconds: float = 0.2
    """How long a ``slow`` fault waits before answering correctly."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], got {self.rate}")
        unknown = {k for k in (*self.kinds, *self.sequence) if k is not None and k not in FAULT_KINDS}
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if self.rate > 0 and not self.kinds:
            raise ValueError("a fault rate above 0 needs at least one fault kind")
        if not 0.0 <= self.hang_seconds <= 60.0 or not 0.0 <= self.slow_seconds <= 60.0:
            raise ValueError("hang_seconds and slow_seconds must be between 0 and 60")

    def fault_for(self, index: int) -> str | None:
        """The fault for the request with arrival index ``index``, or ``None``."""
        if index < len(self.sequence):
            return self.sequence[index]
        rng = random.Random(f"{self.seed}:{index}")
        if rng.random() < self.rate:
            return self.kinds[rng.randrange(len(self.kinds))]
        return None


@dataclass(frozen=True)
class RawResponse:
    """A reply sent as is: any status, any body (str bodies are UTF-8 encoded)."""

    status: int
    body: bytes | str
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


TopLogprobs = list[dict[str, Any]]
Responder = Callable[[dict[str, Any]], "tuple[str, TopLogprobs | None] | RawResponse"]


def _messages_hash(body: dict[str, Any]) -> str:
    blob = json.dumps(body.get("messages", []), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_top_logprobs(body: dict[str, Any]) -> TopLogprobs:
    """The default first-token distribution for a request: always favours " Yes", by a hashed margin.

    The total probability of a yes-token is ``0.6 + 0.3·h`` with ``h`` in [0, 1) from a hash of the
    messages; it is split 0.8/0.2 between " Yes" and "Yes". The rest goes 0.7/0.2/0.1 to " No", "No"
    and " Maybe". Sorted by probability, cut to the request's ``top_logprobs`` (default 20).
    """
    h = int(_messages_hash(body)[:8], 16) / 2**32
    p_yes = 0.6 + 0.3 * h
    rest = 1.0 - p_yes
    probs = {
        " Yes": 0.8 * p_yes,
        "Yes": 0.2 * p_yes,
        " No": 0.7 * rest,
        "No": 0.2 * rest,
        " Maybe": 0.1 * rest,
    }
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    k = int(body.get("top_logprobs") or 20)
    return [{"token": t, "logprob": math.log(p)} for t, p in ranked[:k]]


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def default_responder(body: dict[str, Any]) -> tuple[str, TopLogprobs]:
    """Deterministic replies: a first word from :func:`default_top_logprobs`, then an echo.

    The first token is the most likely one at temperature 0 and otherwise drawn from the distribution
    with ``random.Random(f"{seed}:{hash of messages}")``. With ``max_tokens=1`` the reply is that token;
    otherwise it is ``"<Word>, you said: <first words of the last user message>"``, cut to
    ``max_tokens`` words.
    """
    top = default_top_logprobs({**body, "top_logprobs": 20})
    if float(body.get("temperature", 1.0)) == 0.0:
        first = str(top[0]["token"])
    else:
        rng = random.Random(f"{body.get('seed')}:{_messages_hash(body)}")
        tokens = [str(t["token"]) for t in top]
        first = rng.choices(tokens, weights=[math.exp(t["logprob"]) for t in top])[0]
    max_tokens = int(body.get("max_tokens") or 16)
    if max_tokens == 1:
        return first, top
    words = [f"{first.strip()},", "you", "said:", *_last_user_text(body).split()[:8]]
    return " ".join(words[:max_tokens]), top


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers; every reply sends Content-Length
    disable_nagle_algorithm = True  # headers and body go out separately: without this each reply waits ~40 ms
    timeout = 10  # an idle keep-alive connection is dropped after this many seconds

    @property
    def owner(self) -> LoopbackServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``LoopbackServer.requests`` instead of a log."""

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, add=False)

    def _send(self, status: int, body: bytes | str, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (timed out) while we were sleeping
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        payload = {"error": {"message": message, "type": "loopback_error", "code": status}}
        self._send(status, json.dumps(payload), headers=headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": self.owner.model, "object": "model", "owned_by": "contagion-loopback"}
            self._send(200, json.dumps({"object": "list", "data": [model]}))
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route POST {self.path}")
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._error(400, "request body is not valid JSON")
            return
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object")
            return
        owner = self.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault = owner._admit(body, headers)
        if owner.api_key is not None and headers.get("authorization") != f"Bearer {owner.api_key}":
            self._error(401, "missing or wrong API key")
            return
        if owner.latency:
            owner._sleep(owner.latency)
        if fault is not None and self._fault(fault):
            return
        self._answer(body)

    def _fault(self, kind: str) -> bool:
        """Apply a fault; True when the reply has been sent (or deliberately not sent)."""
        plan = self.owner.faults
        assert plan is not None
        if kind in ("500", "503", "429"):
            extra = {"Retry-After": "0"} if kind == "429" else None
            self._error(int(kind), f"planned fault {kind}", headers=extra)
            return True
        if kind == "malformed":
            self._send(200, '{"id": "chatcmpl-loopback", "choices": [{"message": {"content": "cut o')
            return True
        if kind == "reset":
            # SO_LINGER 0 makes close() send a TCP reset instead of a clean end: a dropped connection.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return True
        if kind == "timeout":
            self.owner._sleep(plan.hang_seconds)
        elif kind == "slow":
            self.owner._sleep(plan.slow_seconds)
        return False

    def _answer(self, body: dict[str, Any]) -> None:
        owner = self.owner
        try:
            result = owner.responder(body)
        except Exception as exc:  # a broken responder must show up in the test, not hang it
            owner.errors.append(exc)
            self._error(500, f"responder raised {type(exc).__name__}: {exc}")
            return
        if isinstance(result, RawResponse):
            self._send(result.status, result.body, result.content_type, result.headers)
            return
        text, top = result
        logprobs: dict[str, Any] | None = None
        if body.get("logprobs") and owner.logprobs and top:
            k = int(body.get("top_logprobs") or 0)
            chosen = next((t for t in top if t["token"] == text), top[0])
            first = {
                "token": chosen["token"],
                "logprob": chosen["logprob"],
                "bytes": list(str(chosen["token"]).encode()),
                "top_logprobs": [dict(t, bytes=list(str(t["token"]).encode())) for t in top[:k]],
            }
            logprobs = {"content": [first]}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages", []))
        completion_tokens = len(text.split())
        reply = {
            "id": f"chatcmpl-loopback-{len(owner.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", owner.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": "length" if completion_tokens >= int(body.get("max_tokens") or 1 << 30)
                    else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        self._send(200, json.dumps(reply))


class LoopbackServer:
    """An OpenAI-compatible chat server on 127.0.0.1 in a background thread; use it as a context manager.

    Args:
        responder: builds each reply (see the module docstring); default :func:`default_responder`.
        faults: planned failures (:class:`FaultPlan`); none by default.
        latency: seconds every request waits before being answered (benchmarks of HTTP overhead).
        logprobs: whether the server returns logprobs when asked; ``False`` imitates servers without.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get HTTP 401.
        model: the model name listed by ``GET /v1/models``.
        port: 0 picks a free port.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        requests: every chat request body received, in arrival order (faulted ones included).
        headers: the matching request headers (lower-case names).
        fault_log: ``(arrival index, fault kind)`` for every fault served.
        errors: exceptions raised by the responder (each was answered with HTTP 500).
    """

    _JOIN_SECONDS: ClassVar[float] = 5.0

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        faults: FaultPlan | None = None,
        latency: float = 0.0,
        logprobs: bool = True,
        api_key: str | None = None,
        model: str = "loopback",
        port: int = 0,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.responder: Responder = responder or default_responder
        self.faults = faults
        self.latency = latency
        self.logprobs = logprobs
        self.api_key = api_key
        self.model = model
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fault_log: list[tuple[int, str]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give a client, ending in ``/v1``."""
        if self._httpd is None:
            raise RuntimeError("the loopback server is not running; use it in a 'with' block or call start()")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> LoopbackServer:
        """Bind and serve in a daemon thread. Returns self."""
        if self._httpd is not None:
            raise RuntimeError("the loopback server is already running")
        self._stop.clear()
        httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="contagion-loopback"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake sleeping handlers, drop open connections, close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stop.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(self._JOIN_SECONDS)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- used by the handler threads -------------------------------------------------------------
    def _admit(self, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            self.headers.append(headers)
            fault = self.faults.fault_for(index) if self.faults is not None else None
            if fault is not None:
                self.fault_log.append((index, fault))
        return fault

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)
