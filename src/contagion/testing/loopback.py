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
asks for logprobs and the server was built with ``logprobs=True``) or ``None``. A responder may instead
return a :class:`Reply`, token by token with the candidates at every position (the server cuts it at
``max_tokens`` and can move reasoning into a field of its own, as servers with a reasoning parser do), or
a :class:`RawResponse` to send any status and body (error replies, odd shapes). The default,
:func:`default_responder`, is deterministic: see its docstring; :mod:`contagion.testing.styles` answers
in the styles served models answer in (markdown, a few words first, reasoning), with known probabilities.

Faults (:class:`FaultPlan`) are drawn per request from a seeded generator keyed on the request's arrival
index, so a plan is reproducible for a given request order. Waits (hangs, slow replies, ``latency``)
end when the server stops, so leaving the ``with`` block never waits for them.

Token counts are whitespace words (plus 4 per message for the prompt): stable numbers to assert on,
not a real tokenizer. Only one choice is returned per request (``n`` is ignored).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from aiohttp import web

FAULT_KINDS: tuple[str, ...] = (
    "500", "503", "429", "timeout", "slow", "malformed", "reset", "nologprobs", "empty",
)
"""Every fault a plan may draw: HTTP 500/503/429 replies (429 with ``Retry-After``), a hang past the
client's timeout, a slow but correct reply, a 200 reply whose JSON body is cut off, a connection closed
without any reply, a correct reply without the logprobs that were asked for, and a 200 reply with an
empty ``choices`` list."""

SERVER_FAULTS: tuple[str, ...] = ("500", "503", "429", "timeout", "malformed", "nologprobs", "empty")
"""The seven ways real servers were seen to fail (issue 15): what the fault soak benchmark injects."""


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
    retry_after: float = 0.0
    """The ``Retry-After`` seconds a ``429`` fault asks for."""

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
        if not 0.0 <= self.retry_after <= 600.0:
            raise ValueError("retry_after must be between 0 and 600 seconds")

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


@dataclass(frozen=True)
class Token:
    """One generated token of a :class:`Reply` and the candidates at its position (``top``: dicts with
    ``token`` and ``logprob``, most likely first; the generated token should be among them)."""

    text: str
    top: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Reply:
    """A reply token by token, as a server generates it: the server cuts it at the request's
    ``max_tokens``, sends the logprobs of every token it kept, and — with ``reasoning_field`` set, like a
    server running a reasoning parser — moves the reasoning (the text before the closing ``</think>``-style
    marker, markers included) out of ``content`` into that field (``reasoning_content`` or ``reasoning``).
    ``logprobs_cover`` says which tokens' logprobs are sent then: ``all`` generated tokens (vLLM, SGLang) or
    only the ``content`` ones (OpenAI's definition)."""

    tokens: tuple[Token, ...]
    reasoning_field: str | None = None
    logprobs_cover: str = "all"

    def __post_init__(self) -> None:
        if self.logprobs_cover not in ("all", "content"):
            raise ValueError("logprobs_cover must be 'all' or 'content'")


Responder = Callable[[dict[str, Any]], "tuple[str, TopLogprobs | None] | Reply | RawResponse"]


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


_ACT_PROMPT = re.compile(r"Reply with one word: '([A-Za-z]+)' or '([A-Za-z]+)'")


def game_responder(body: dict[str, Any]) -> tuple[str, TopLogprobs]:
    """A responder that can play the games: an action prompt (``Reply with one word: 'a' or 'b'``) gets
    first-token log-probs over the two action labels (a preference hashed from the messages, between 0.2
    and 0.8 for the first); anything else is answered by :func:`default_responder`."""
    match = _ACT_PROMPT.search(_last_user_text(body))
    if match is None:
        return default_responder(body)
    coop, defect = match.groups()
    p = 0.2 + 0.6 * int(_messages_hash(body)[:8], 16) / 2**32
    pairs = sorted([(f" {coop}", math.log(p * 0.9)), (f" {defect}", math.log((1 - p) * 0.9)), (" I", math.log(0.1))],
                   key=lambda pair: -pair[1])
    top: TopLogprobs = [{"token": token, "logprob": lp} for token, lp in pairs]
    return str(top[0]["token"]), top


def _logprob_entry(chosen: dict[str, Any], top: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """One position of ``logprobs.content``: the generated token and the ``k`` most likely candidates."""
    return {
        "token": chosen["token"],
        "logprob": chosen["logprob"],
        "bytes": list(str(chosen["token"]).encode()),
        "top_logprobs": [dict(t, bytes=list(str(t["token"]).encode())) for t in top[:k]],
    }


_THINK_OPEN = re.compile(r"^\s*<think>")
_THINK_CLOSE = re.compile(r"</think>")


def _reasoning_end(text: str) -> int | None:
    """Where a reasoning parser would end the reasoning of ``text``: after ``</think>`` (0 if the reply does
    not reason, None if it never stops). The server's own small rule, apart from the client's."""
    close = _THINK_CLOSE.search(text)
    if close is not None:
        return close.end()
    return None if _THINK_OPEN.search(text) else 0


def _json_response(status: int, body: bytes | str, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> web.Response:
    data = body.encode() if isinstance(body, str) else body
    response = web.Response(status=status, body=data, headers=headers or {})
    response.content_type = content_type
    return response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": "loopback_error", "code": status}}
    return _json_response(status, json.dumps(payload), headers=headers)


class LoopbackServer:
    """An OpenAI-compatible chat server on 127.0.0.1 in a background thread; use it as a context manager.

    It is an :mod:`aiohttp` server on its own event loop, so a thousand open keep-alive connections cost
    no threads, and a request that waits (``latency``, a slow or hanging fault) costs no CPU: the server
    answers hundreds of requests per second and is not what a client benchmark measures.

    Args:
        responder: builds each reply (see the module docstring); default :func:`default_responder`.
            It is called on the server's event loop, so it should be quick.
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    @property
    def base_url(self) -> str:
        """The URL to give a client, ending in ``/v1``."""
        if self._bound_port is None:
            raise RuntimeError("the loopback server is not running; use it in a 'with' block or call start()")
        return f"http://127.0.0.1:{self._bound_port}/v1"

    def start(self) -> LoopbackServer:
        """Bind and serve on an event loop in a daemon thread. Returns self once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("the loopback server is already running")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop = loop
        self._thread = threading.Thread(target=self._serve, args=(loop, ready), daemon=True,
                                        name="contagion-loopback")
        self._thread.start()
        try:
            self._bound_port = ready.result(self._JOIN_SECONDS)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open(ready))
        except BaseException as exc:  # e.g. the port is taken: report it to start()
            if not ready.done():
                ready.set_exception(exc)
            loop.close()
            return
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.close()

    async def _open(self, ready: concurrent.futures.Future[int]) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/{path:.*}", self._get)
        app.router.add_post("/{path:.*}", self._post)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=10,
                               shutdown_timeout=0.01)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, backlog=1024)
        await site.start()
        self._runner = runner
        ready.set_result(int(runner.addresses[0][1]))  # the port picked when port=0

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        """Stop serving: cancel waiting requests, drop open connections, close the socket."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._bound_port = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended (start failed)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self._JOIN_SECONDS)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- request handling (on the server's loop) --------------------------------------------------
    @staticmethod
    async def _sleep(seconds: float) -> None:
        """Wait; a request still waiting when the server stops is cancelled by :meth:`stop`."""
        await asyncio.sleep(seconds)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/").endswith("/models"):
            model = {"id": self.model, "object": "model", "owned_by": "contagion-loopback"}
            return _json_response(200, json.dumps({"object": "list", "data": [model]}))
        return _error(404, f"no route GET {request.path}")

    async def _post(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.path.rstrip("/").endswith("/chat/completions"):
            return _error(404, f"no route POST {request.path}")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        headers = {k.lower(): v for k, v in request.headers.items()}
        fault = self._admit(body, headers)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "missing or wrong API key")
        if self.latency:
            await self._sleep(self.latency)
        if fault is not None:
            faulted = await self._fault(fault, request)
            if faulted is not None:
                return faulted
        return self._answer(body, with_logprobs=fault != "nologprobs")

    async def _fault(self, kind: str, request: web.Request) -> web.StreamResponse | None:
        """Apply a fault: the reply to send, or None to go on and answer normally."""
        plan = self.faults
        assert plan is not None
        if kind in ("500", "503", "429"):
            extra = {"Retry-After": f"{plan.retry_after:g}"} if kind == "429" else None
            return _error(int(kind), f"planned fault {kind}", headers=extra)
        if kind == "empty":
            return _json_response(200, json.dumps({"id": "chatcmpl-loopback", "object": "chat.completion",
                                                   "choices": [], "usage": None}))
        if kind == "malformed":
            return _json_response(200, '{"id": "chatcmpl-loopback", "choices": [{"message": {"content": "cut o')
        if kind == "reset":
            # SO_LINGER 0 makes close() send a TCP reset instead of a clean end: a dropped connection.
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            raise asyncio.CancelledError  # nothing is sent: the handler ends with the connection
        if kind == "timeout":
            await self._sleep(plan.hang_seconds)
        elif kind == "slow":
            await self._sleep(plan.slow_seconds)
        return None

    def _answer(self, body: dict[str, Any], *, with_logprobs: bool = True) -> web.Response:
        try:
            result = self.responder(body)
        except Exception as exc:  # a broken responder must show up in the test, not hang it
            self.errors.append(exc)
            return _error(500, f"responder raised {type(exc).__name__}: {exc}")
        if isinstance(result, RawResponse):
            return _json_response(result.status, result.body, result.content_type, result.headers)
        asks = bool(body.get("logprobs") and self.logprobs and with_logprobs)
        k = int(body.get("top_logprobs") or 0)
        if isinstance(result, Reply):
            message, logprobs, completion_tokens, cut = self._reply(result, body, asks, k)
        else:
            text, top = result
            message = {"role": "assistant", "content": text}
            logprobs = None
            if asks and top:
                chosen = next((t for t in top if t["token"] == text), top[0])
                logprobs = {"content": [_logprob_entry(chosen, top, k)]}
            completion_tokens = len(text.split())
            cut = completion_tokens >= int(body.get("max_tokens") or 1 << 30)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages", []))
        reply = {
            "id": f"chatcmpl-loopback-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": "length" if cut else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _json_response(200, json.dumps(reply))

    @staticmethod
    def _reply(reply: Reply, body: dict[str, Any], asks: bool, k: int
               ) -> tuple[dict[str, Any], dict[str, Any] | None, int, bool]:
        """(message, logprobs, completion tokens, cut by max_tokens) of a token-by-token reply."""
        limit = int(body.get("max_tokens") or 1 << 30)
        tokens = reply.tokens[:limit]
        text = "".join(t.text for t in tokens)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        first_content = 0  # index of the first token of ``content``
        if reply.reasoning_field is not None:
            end = _reasoning_end(text)
            split = len(text) if end is None else end
            if split:
                thought = _THINK_CLOSE.sub("", _THINK_OPEN.sub("", text[:split])).strip()
                message = {"role": "assistant", "content": text[split:].lstrip(), reply.reasoning_field: thought}
                offset = 0
                first_content = len(tokens)
                for i, t in enumerate(tokens):
                    if offset >= split:
                        first_content = i
                        break
                    offset += len(t.text)
        logprobs = None
        if asks:
            shown = tokens if reply.logprobs_cover == "all" else tokens[first_content:]
            logprobs = {"content": [_logprob_entry(next((c for c in t.top if c["token"] == t.text),
                                                        {"token": t.text, "logprob": 0.0}), list(t.top), k)
                                    for t in shown]}
        return message, logprobs, len(tokens), len(reply.tokens) > limit

    def _admit(self, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            self.headers.append(headers)
            fault = self.faults.fault_for(index) if self.faults is not None else None
            if fault is not None:
                self.fault_log.append((index, fault))
        return fault
