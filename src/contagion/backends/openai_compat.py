"""Any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server, OpenAI) as a Backend.

Spec: ``openai:MODEL@BASE_URL``, options after ``?`` (``openai:qwen2.5-7b@http://localhost:8000/v1?timeout=30``):

- ``timeout`` — seconds per HTTP request (default 60);
- ``logprobs`` — ``0`` declares that the server returns no logprobs, so scoring goes straight to the
  sampled fallback (default ``1``);
- ``samples`` — answers drawn per :meth:`~OpenAIBackend.score_choices` call by the sampled fallback
  (default 20);
- ``top_logprobs`` — candidates asked for the first token, 1..20 (default 20);
- ``score`` — where the scored answer is: ``first-token`` (default; the reply's first token, as every
  backend scores it), ``answer-token`` (one generation with logprobs, scored at the first token after any
  reasoning or opener that owns a choice: :mod:`contagion.backends.answer_token`) or ``auto`` (a short fixed
  probe, :mod:`contagion.backends.probe`, decides once per backend: first-token where the answers hold at
  least half of the first token's probability, answer-token otherwise; :attr:`OpenAIBackend.auto_probe` and
  every score's ``method`` say which);
- ``extra_body`` and ``system_role`` — server options and templates without a system role
  (:mod:`contagion.backends.server_options`);
- ``answer_tokens`` — how many tokens an answer-token score (and, with ``score`` other than
  ``first-token``, each sampled-fallback answer) may generate before its answer, 1..8192 (default 1024).

Replies of reasoning models are taken apart (:mod:`contagion.backends.reasoning`): ``generate`` returns the
answer as ``Completion.text`` and the reasoning — a ``reasoning_content`` / ``reasoning`` field, or inline
``<think>`` tags — as ``Completion.reasoning``; the sampled fallback reads the answer only.

The API key is read from ``CONTAGION_API_KEY`` or else ``OPENAI_API_KEY`` and sent as a bearer token. It
never appears in the spec, the identity, records, logs or exception messages.

Scoring (:meth:`OpenAIBackend.score_choices`): a chat API cannot score a given continuation, so the
backend asks for one token at temperature 0 with ``top_logprobs`` and reads each choice's log-prob off
that first-token distribution (method ``first-token-top-logprobs``):

- tokens are matched to choices by the first-token rule that every backend applies to the same
  top-k list (:mod:`contagion.backends.first_token`; local backends compute the list from their own
  logits): a token counts for a choice when both are equal after stripping spaces and ignoring case
  (" Yes", "Yes" and "YES" all count for "Yes"), or when it is a proper prefix of that choice and of no
  other ("Co" for "Cooperate", the first token of a multi-token answer); the probabilities of all
  matching tokens are summed;
- a choice with no matching token among the returned candidates gets a *floor*: the log of half the
  probability of the least likely returned candidate, i.e. ``min(logprob) - ln 2`` — below anything
  returned, as the truth must be, without pretending to know how far below. Floored choices are
  listed in ``Scores.detail["floored"]`` (and the floor value in ``detail["floor"]``).

When the spec says ``logprobs=0``, or the server turns out to have no logprobs at all, the backend
samples ``samples`` short answers at temperature 1 (seeds 0..n-1, reproducible where the server honours
``seed``), counts which choice each answer starts with and scores choice ``c`` as
``log((count_c + 0.5) / (n + 0.5·k))`` for ``k`` choices. The method is then ``sampled-fallback``, the
counts and answers are in ``Scores.detail``; it is an estimate and says so. Each sampled request is retried
on its own (:func:`~contagion.backends.retry.retry_call`, ``sample_retries`` times), so one flaky reply
does not sink the other samples; the retries are counted in ``Scores.detail["retries"]``.

The method is decided once per backend, never flipped mid-run: a server is taken to have no logprobs
only when its first :data:`LOGPROB_PROBES` scoring replies in a row all lack them (and none ever had
them); the backend then switches to the sampled fallback before it has scored anything, and its
``capabilities`` say so. Once a reply has carried logprobs, a reply without them is a transient fault
(``BackendError(transient=True)``), retried like a 503 — the method stays first-token.

The project's own question and action formats (version 2) use no prefix: what is scored is the
reply's first token, as on every other backend. A ``prefix`` (format v1, or a caller's own) cannot be
pre-filled into the assistant's turn through a chat API, so it becomes an instruction appended to the
last user message (:data:`PREFIX_INSTRUCTION`): the reply should be what comes right after the prefix.
A model that repeats the prefix anyway shifts the first token; the sampled fallback strips a repeated
prefix, the first-token method cannot. Such scores are not comparable with a local backend's, which
pre-fills the prefix.

Errors: HTTP 408/429/5xx, timeouts, dropped connections, unparseable JSON bodies and an empty ``choices``
list raise ``BackendError(transient=True)`` — a truncated body or an empty reply is typically a proxy,
load-balancer or overloaded-server hiccup that a retry fixes. A ``Retry-After`` header (seconds or an
HTTP date) is passed on as ``BackendError.retry_after``. Other 4xx replies (400, 401, 404, ...) and
well-formed JSON without the expected fields raise ``BackendError(transient=False)``: the same request
will fail again. A refused connection before any
request ever reached the server raises :class:`~contagion.errors.BackendUnavailableError` naming the
URL and the fix; later, the server may just be restarting, so it is transient.

The HTTP client (an :mod:`aiohttp` session) is created lazily per running event loop, so one backend
works across repeated ``asyncio.run`` calls (e.g. :func:`~contagion.backends.base.run_sync`) and from
several loops at once. Its connection pool has no size limit of its own: how many requests are in flight
is the caller's choice (``concurrency`` of the runner or of :class:`~contagion.backends.robust.RobustBackend`).
aiohttp rather than httpx because the client's CPU cost per request bounds throughput against fast
servers: measured on a 2-core machine, httpx's pool spent ~1.1 ms of CPU per request and
grew with the number of open connections, aiohttp ~0.2 ms.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import os
import re
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from contagion.backends.answer_token import locate_answer, no_answer
from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
)
from contagion.backends.first_token import owner, score_candidates, targets_of
from contagion.backends.probe import AUTO_MASS, PROBES
from contagion.backends.reasoning import reasoning_field, split_reasoning
from contagion.backends.retry import leaf_errors, retry_call, should_retry
from contagion.backends.server_options import (
    JSON_SAFE,
    apply_system_role,
    canonical_json,
    parse_extra_body,
    parse_system_role,
)
from contagion.errors import BackendError, BackendSpecError, BackendUnavailableError
from contagion.messages import Message, wire
from contagion.redact import redact

API_KEY_ENV_VARS = ("CONTAGION_API_KEY", "OPENAI_API_KEY")
"""Environment variables holding the API key, first match wins."""

PREFIX_INSTRUCTION = '\n\nYour reply continues the text "{prefix}": write only what comes right after it.'
"""Appended to the last user message when ``score_choices`` is given a non-empty ``prefix``."""

PARAMS: dict[str, str] = {
    "timeout": "seconds per HTTP request (default 60)",
    "logprobs": "0 if the server returns no logprobs (default 1)",
    "samples": "answers sampled per score by the fallback (default 20)",
    "top_logprobs": "first-token candidates to request, 1..20 (default 20)",
    "sample_retries": "retries of each sampled-fallback request, 0..20 (default 5)",
    "score": "where the scored answer is: first-token, answer-token or auto (default first-token)",
    "answer_tokens": "tokens an answer-token score may generate, reasoning included, 1..8192 (default 1024)",
    "extra_body": "a JSON object of request fields sent with every request, e.g. chat_template_kwargs",
    "system_role": "system messages sent as system (default), user, or merge (into the next user message)",
}
"""Options accepted after ``?`` in the spec."""

_OUTCOME_PARAMS = ("logprobs", "samples", "top_logprobs", "score", "answer_tokens", "extra_body",
                   "system_role")  # they change results, so they are part of the identity
_DEFAULTS = {"logprobs": "1", "samples": "20", "top_logprobs": "20", "score": "first-token",
             "answer_tokens": "1024", "extra_body": "{}", "system_role": "system"}
SCORE_MODES = ("first-token", "answer-token", "auto")
"""Values of the ``score`` option (see :mod:`contagion.backends.answer_token` and :mod:`contagion.backends.probe`)."""
_TRANSIENT_STATUS = frozenset({408, 425, 429})
LOGPROB_PROBES = 3
"""Scoring replies in a row without logprobs (and none before with them) that show a server has none."""
_SAMPLE_CONCURRENCY = 8
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_ClientEntry = tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]  # a loop's client and its closer
_ANSWER_LEAD = " \t\r\n*_\"'`([{>-:"  # markdown and quotes a model may put before its answer


def _api_key() -> str | None:
    for name in API_KEY_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one takes tens of milliseconds, and a client is made per loop.

    Trusts certifi's CA bundle when certifi is installed (as most Python environments have it), else
    the system's store.
    """
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _norm(text: str) -> str:
    return text.strip().casefold()


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint (see the module docstring)."""

    score_concurrency = 16
    """``score_choices_many`` (one profile's items, one round's actions) sends this many requests at once:
    the server batches them, so a 60-item profile waits about four round trips, not sixty."""

    def __init__(self, model: str, base_url: str, **params: str | float) -> None:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            valid = "; ".join(f"{k} ({v})" for k, v in PARAMS.items())
            raise BackendSpecError(f"unknown option(s) {unknown} for an openai: backend; valid: {valid}")
        if not model:
            raise BackendSpecError("an openai: backend needs a model name: openai:MODEL@BASE_URL")
        base_url = base_url.strip().rstrip("/")
        try:
            parts = urlsplit(base_url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise BackendSpecError(f"the BASE_URL of an openai: backend is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendSpecError(
                "the BASE_URL of an openai: backend must be an http(s) URL, e.g. "
                "openai:MODEL@http://localhost:8000/v1"
            )
        if parts.username is not None or parts.password is not None:
            raise BackendSpecError(
                "the BASE_URL of an openai: backend must not carry credentials (user:password@): set the key in "
                f"{' or '.join(API_KEY_ENV_VARS)}")
        if parts.fragment or base_url.endswith("#"):
            raise BackendSpecError(
                f"the BASE_URL of an openai: backend must not have a #fragment (got {redact(base_url)!r}); give the "
                "server's URL, e.g. http://localhost:8000/v1")
        self.model = model
        self.base_url = base_url
        self.timeout = self._number(params, "timeout", 60.0, low=0.001)
        self.samples = int(self._number(params, "samples", 20, low=1, integer=True))
        self.top_logprobs = int(self._number(params, "top_logprobs", 20, low=1, high=20, integer=True))
        self.sample_retries = int(self._number(params, "sample_retries", 5, low=0, high=20, integer=True))
        flag = str(params.get("logprobs", "1")).strip().lower()
        if flag not in ("0", "1", "true", "false"):
            raise BackendSpecError("option logprobs of an openai: backend must be 0 or 1")
        self.server_logprobs = flag in ("1", "true")
        self._logprobs_missing = None if self.server_logprobs else "logprobs=0 in the backend spec"
        self._logprobs_seen = False  # a scoring reply has carried logprobs: the method is settled
        self.score_mode = str(params.get("score", "first-token")).strip().lower()
        if self.score_mode not in SCORE_MODES:
            raise BackendSpecError(f"option score of an openai: backend must be one of {', '.join(SCORE_MODES)} "
                                   f"(got {params.get('score')!r})")
        self.answer_tokens = int(self._number(params, "answer_tokens", 1024, low=1, high=8192, integer=True))
        self._method: ScoreMethod | None = {"first-token": ScoreMethod.FIRST_TOKEN,
                                            "answer-token": ScoreMethod.ANSWER_TOKEN}.get(self.score_mode)
        self.auto_probe: dict[str, Any] | None = None
        """What the ``auto`` probe measured and chose (None before it ran, or without ``score=auto``)."""
        self._probe_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self.extra_body = parse_extra_body(str(params["extra_body"])) if "extra_body" in params else {}
        self.system_role = parse_system_role(str(params.get("system_role", "system")))

        base = f"openai:{model}@{base_url}"
        canonical = {
            "timeout": f"{self.timeout:g}",
            "logprobs": "1" if self.server_logprobs else "0",
            "samples": str(self.samples),
            "top_logprobs": str(self.top_logprobs),
            "sample_retries": str(self.sample_retries),
            "score": self.score_mode,
            "answer_tokens": str(self.answer_tokens),
            "extra_body": quote(canonical_json(self.extra_body), safe=JSON_SAFE),
            "system_role": self.system_role,
        }
        given = {k: canonical[k] for k in sorted(params)}  # the spec keeps what was asked for
        self.spec = base + ("?" + "&".join(f"{k}={v}" for k, v in given.items()) if given else "")
        outcome = {k: canonical[k] for k in _OUTCOME_PARAMS if canonical[k] != _DEFAULTS[k]}
        self._identity = base + ("?" + "&".join(f"{k}={v}" for k, v in outcome.items()) if outcome else "")
        self.capabilities = self._capabilities()

        self._trust_env = parts.hostname not in _LOOPBACK_HOSTS  # no proxy between us and localhost
        self._clients: dict[asyncio.AbstractEventLoop, _ClientEntry] = {}
        self._clients_lock = threading.Lock()
        self._reached_server = False

    @staticmethod
    def _number(
        params: dict[str, str | float],
        name: str,
        default: float,
        *,
        low: float,
        high: float | None = None,
        integer: bool = False,
    ) -> float:
        if name not in params:
            return default
        try:
            value = float(params[name])
        except (TypeError, ValueError):
            raise BackendSpecError(f"option {name} of an openai: backend must be a number") from None
        out_of_range = value < low or (high is not None and value > high)
        if not math.isfinite(value) or (integer and not value.is_integer()) or out_of_range:
            kind = "an integer" if integer else "a number"
            bounds = f">= {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise BackendSpecError(f"option {name} of an openai: backend must be {kind} {bounds}")
        return value

    def _capabilities(self) -> Capabilities:
        scored = self._method or ScoreMethod.FIRST_TOKEN  # auto: first-token until its probe says otherwise
        return Capabilities(
            language_model=True,
            logprobs=self.server_logprobs,
            score_method=scored if self.server_logprobs else ScoreMethod.SAMPLED,
            prefix_caching=False,
            deterministic=False,
            served=True,
        )

    @property
    def identity(self) -> str:
        """Model and URL plus the options that change results (not ``timeout``); never the API key."""
        return self._identity

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.spec!r})"

    # -- HTTP ---------------------------------------------------------------------------------
    async def _client(self) -> aiohttp.ClientSession:
        """The client of the running loop, made on first use; entries of closed loops are dropped."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get(loop)
            if entry is not None and not entry[0].closed:
                return entry[0]
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]
            key = _api_key()  # read when a client is made, never kept on the backend itself
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=headers,
                trust_env=self._trust_env,
                connector=aiohttp.TCPConnector(limit=0, ssl=_ssl_context()),
            )
            guard = _close_with_loop(client)
            self._clients[loop] = (client, guard)
        await guard.__anext__()  # now the loop knows the guard, and closes it at shutdown
        return client

    def _redact(self, text: str) -> str:
        key = _api_key()
        return text.replace(key, "***") if key else text

    async def _post(self, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST a chat request; the decoded JSON object and the wall seconds, or a mapped error."""
        url = f"{self.base_url}/chat/completions"
        if self.extra_body or self.system_role != "system":  # server options (backends.server_options)
            payload = {**self.extra_body, **payload,
                       "messages": apply_system_role(payload["messages"], self.system_role)}
        started = time.perf_counter()
        try:
            async with (await self._client()).post(url, json=payload) as response:
                status = response.status
                reason = response.reason or ""
                wait = _retry_after(response.headers.get("Retry-After")) if status >= 400 else None
                raw = await _read_bounded(response, reply_limit(payload), self.base_url)
        except aiohttp.ClientConnectorError as exc:
            if not self._reached_server:
                raise BackendUnavailableError(
                    f"cannot connect to the OpenAI-compatible server at {self.base_url} "
                    f"({self._redact(str(exc.os_error or exc)) or type(exc).__name__}): is the server running? "
                    "Start vLLM/Ollama/llama.cpp server there, or fix BASE_URL in openai:MODEL@BASE_URL."
                ) from None
            raise BackendError(
                f"lost the connection to {self.base_url}: {self._redact(str(exc))}", transient=True
            ) from None
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise BackendError(
                f"{self.base_url} did not answer within {self.timeout:g} s ({type(exc).__name__})",
                transient=True,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise BackendError(
                f"connection to {self.base_url} failed: {type(exc).__name__}: {self._redact(str(exc))}",
                transient=True,
            ) from None
        except aiohttp.ClientError as exc:  # e.g. an invalid URL: the same request fails again
            raise BackendError(
                f"request to {self.base_url} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        seconds = time.perf_counter() - started
        self._reached_server = True
        if status >= 400:
            error = self._http_error(status, reason, raw)
            error.retry_after = wait
            raise error
        try:
            data = json.loads(raw)
        except ValueError:
            raise BackendError(
                f"{self.base_url} sent a reply that is not valid JSON (HTTP {status}); "
                "treated as a transient proxy/server hiccup",
                transient=True,
                status=status,
            ) from None
        if not isinstance(data, dict):
            raise BackendError(f"{self.base_url} sent JSON that is not an object", status=status)
        return data, seconds

    def _http_error(self, status: int, reason: str, raw: bytes) -> BackendError:
        transient = status in _TRANSIENT_STATUS or status >= 500
        if status in (401, 403):
            # The body may echo part of the key; do not repeat it.
            return BackendError(
                f"{self.base_url} rejected the request (HTTP {status}): set the API key in "
                f"{' or '.join(API_KEY_ENV_VARS)}",
                status=status,
            )
        detail = self._redact(self._error_text(reason, raw))
        hint = ""
        if status == 400 and "logprob" in detail.lower():
            hint = "; if this server has no logprobs, add ?logprobs=0 to the backend spec"
        return BackendError(
            f"{self.base_url} answered HTTP {status}: {detail}{hint}", transient=transient, status=status
        )

    @staticmethod
    def _error_text(reason: str, raw: bytes) -> str:
        try:
            data = json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")[:300] or reason
        if isinstance(data, dict):
            error = data.get("error", data.get("detail", data.get("message")))
            if isinstance(error, dict):
                error = error.get("message", error)
            if error is not None:
                return str(error)[:300]
        return str(data)[:300]

    def _first_choice(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = data.get("choices")
        if isinstance(choices, list) and not choices:  # an overloaded or filtering server's empty answer
            raise BackendError(f"{self.base_url} sent a reply with an empty choices list", transient=True)
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise BackendError(f"{self.base_url} sent a reply without choices[0]")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise BackendError(f"{self.base_url} sent a reply without choices[0].message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise BackendError(f"{self.base_url} sent a non-text choices[0].message.content")
        return choice

    @staticmethod
    def _usage(data: dict[str, Any]) -> tuple[int, int, int]:
        """(prompt, completion, prompt actually encoded) tokens; zeros when the server reports none."""
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return 0, 0, 0
        try:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        except (TypeError, ValueError):
            return 0, 0, 0
        return prompt, completion, max(prompt - cached, 0)

    # -- Backend ------------------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        """One chat completion; ``seconds`` is the wall time of the HTTP request."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": wire(messages),
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.seed is not None:
            payload["seed"] = config.seed
        if config.stop:
            payload["stop"] = list(config.stop)
        data, seconds = await self._post(payload)
        message = self._first_choice(data)["message"]
        reply = split_reasoning(message.get("content") or "", reasoning_field(message))
        prompt, completion, encoded = self._usage(data)
        return Completion(
            text=reply.answer,
            reasoning=reply.reasoning,
            prompt_tokens=prompt,
            completion_tokens=completion,
            prompt_tokens_encoded=encoded,
            seconds=seconds,
        )

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        """Log-prob of each choice as the reply's start: first-token top_logprobs, else sampled (labelled)."""
        if not choices:
            raise ValueError("score_choices needs at least one choice")
        if any(not c.strip() for c in choices):
            raise ValueError("every choice must contain non-space text")
        wired = self._with_prefix(messages, prefix)
        started = time.perf_counter()
        if self._logprobs_missing is None and self._method is None:
            await self._settle_auto()
        if self._logprobs_missing is None:
            scorer = self._score_answer_token if self._method is ScoreMethod.ANSWER_TOKEN else self._score_first_token
            for _ in range(LOGPROB_PROBES):
                scores = await scorer(wired, choices)
                if scores is not None:
                    scores.seconds = time.perf_counter() - started
                    scores.detail["prefix_instruction"] = bool(prefix.strip())
                    return scores
                if self._logprobs_seen or self._logprobs_missing is not None:
                    break
            if self._logprobs_missing is None:
                if not self._logprobs_seen:
                    self._no_logprobs("the server returned no logprobs")
                else:
                    raise BackendError(
                        f"{self.base_url} sent a reply without logprobs, though it has sent them before; "
                        "treated as a transient server fault (the scoring method is not changed)",
                        transient=True,
                    )
        assert self._logprobs_missing is not None
        scores = await self._score_sampled(wired, choices, prefix)
        scores.seconds = time.perf_counter() - started
        scores.detail["prefix_instruction"] = bool(prefix.strip())
        return scores

    @staticmethod
    def _with_prefix(messages: Sequence[Message], prefix: str) -> list[dict[str, str]]:
        wired = wire(messages)
        text = prefix.strip()
        if not text:
            return wired
        instruction = PREFIX_INSTRUCTION.format(prefix=text)
        for i in range(len(wired) - 1, -1, -1):
            if wired[i]["role"] == "user":
                wired[i] = {**wired[i], "content": wired[i]["content"] + instruction}
                return wired
        wired.append({"role": "user", "content": instruction.lstrip()})
        return wired

    async def _logprob_request(self, wired: list[dict[str, str]], *, max_tokens: int
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One greedy request with the top log-probabilities of every generated token (both scoring methods
        ask this; only the reply length differs): the response and its first choice."""
        payload: dict[str, Any] = {"model": self.model, "messages": wired, "max_tokens": max_tokens,
                                   "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs,
                                   "seed": 0}
        data, _ = await self._post(payload)
        return data, self._first_choice(data)

    async def _score_first_token(self, wired: list[dict[str, str]], choices: Sequence[str]) -> Scores | None:
        data, choice = await self._logprob_request(wired, max_tokens=1)
        candidates = self._candidates(choice.get("logprobs"))
        if candidates is None:
            return None  # score_choices decides: a server without logprobs, or a transient fault
        self._logprobs_seen = True
        prompt, _, encoded = self._usage(data)
        # the computation every backend makes; a NaN, +inf or positive candidate makes the scores invalid
        logprobs, detail = score_candidates(candidates, choices)
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.FIRST_TOKEN,
            prompt_tokens=prompt,
            prompt_tokens_encoded=encoded,
            detail=detail,
        )

    # -- answer-token scoring and the auto probe (backends.answer_token, backends.probe) ----------------
    async def _score_answer_token(self, wired: list[dict[str, str]], choices: Sequence[str]) -> Scores | None:
        """One generation with logprobs at every token; the scored position is where the answer is."""
        data, choice = await self._logprob_request(wired, max_tokens=self.answer_tokens)
        positions = self._positions(choice.get("logprobs"))
        if positions is None:
            return None  # as for first-token: a server without logprobs, or a transient fault
        self._logprobs_seen = True
        message = choice["message"]
        content = message.get("content") or ""
        field = reasoning_field(message)
        reply = split_reasoning(content, field)
        found = locate_answer(positions, choices, content=content, reasoning=field)
        if found.index is None:
            logprobs, detail = no_answer(choices)
            detail["no_answer"] = found.reason
        else:
            candidates = positions[found.index][1]
            if not any(math.isfinite(lp) for _, lp in candidates):
                raise BackendError(f"{self.base_url} sent top_logprobs without a finite value")
            logprobs, detail = score_candidates(candidates, choices)
        before = "".join(text for text, _ in positions[:found.index]) if found.index is not None else ""
        detail.update(position=found.index, generated=len(positions), skipped=before[found.start:][-80:])
        if reply.reasoning:
            detail["reasoning"] = reply.reasoning
        prompt, _, encoded = self._usage(data)
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.ANSWER_TOKEN,
            prompt_tokens=prompt,
            prompt_tokens_encoded=encoded,
            detail=detail,
        )

    def _positions(self, logprobs: Any) -> list[tuple[str, list[tuple[str, float]]]] | None:
        """Every generated token with the candidates at its position (chat completions shape), or None when
        the server sent no logprobs. An empty list is a reply whose answer had no tokens."""
        if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
            return None
        out: list[tuple[str, list[tuple[str, float]]]] = []
        for entry in logprobs["content"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                raise BackendError(f"{self.base_url} sent malformed logprobs")
            tops = entry.get("top_logprobs") or []
            if not isinstance(tops, list):
                raise BackendError(f"{self.base_url} sent malformed top_logprobs")
            pairs: dict[str, float] = {}
            for token, lp in [*((t.get("token"), t.get("logprob")) for t in tops if isinstance(t, dict)),
                              (entry["token"], entry.get("logprob"))]:
                if not isinstance(token, str) or isinstance(lp, bool) or not isinstance(lp, int | float):
                    raise BackendError(f"{self.base_url} sent a top_logprobs entry without token/logprob")
                pairs.setdefault(token, float(lp))
            out.append((entry["token"], list(pairs.items())))
        return out

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            lock = self._probe_locks.get(loop)
            if lock is None:
                for old in [lp for lp in self._probe_locks if lp.is_closed()]:
                    del self._probe_locks[old]
                lock = self._probe_locks[loop] = asyncio.Lock()
            return lock

    async def _settle_auto(self) -> None:
        """``score=auto``: ask the fixed probes (:data:`~contagion.backends.probe.PROBES`) for their first
        token once, and settle the method for good: first-token where the answers hold at least
        :data:`~contagion.backends.probe.AUTO_MASS` of it on average, answer-token otherwise (a reply that
        reasons counts as holding none). A server that sends logprobs for none of them has none: the
        sampled fallback, as without ``auto``."""
        async with self._probe_lock():
            if self._method is not None or self._logprobs_missing is not None:
                return  # another call settled it while this one waited
            masses: list[float] = []
            missing = 0
            for probe in PROBES:
                payload: dict[str, Any] = {"model": self.model, "messages": wire(probe.messages), "max_tokens": 1,
                                           "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs,
                                           "seed": 0}
                data, _ = await self._post(payload)
                choice = self._first_choice(data)
                logprobs = choice.get("logprobs")
                candidates = self._candidates(logprobs)
                # logprobs for no content token: the first token went to reasoning the server moved aside
                reasons = reasoning_field(choice["message"]) is not None or (
                    isinstance(logprobs, dict) and logprobs.get("content") == [])
                if candidates is None and not reasons:
                    missing += 1
                    continue
                targets = targets_of(probe.choices)
                held = sum(math.exp(lp) for token, lp in candidates or [] if math.isfinite(lp)
                           and owner(token, targets) is not None)
                masses.append(0.0 if reasons else min(1.0, held))
            if missing == len(PROBES):
                self._no_logprobs("the server returned no logprobs (score=auto probe)")
                self.auto_probe = {"mass": None, "chose": ScoreMethod.SAMPLED.value, "probes": len(PROBES)}
                return
            mass = sum(masses) / len(masses)
            self._method = ScoreMethod.FIRST_TOKEN if mass >= AUTO_MASS else ScoreMethod.ANSWER_TOKEN
            self.auto_probe = {"mass": round(mass, 6), "chose": self._method.value, "probes": len(PROBES)}
            self.capabilities = self.capabilities.model_copy(update={"score_method": self._method})

    def _no_logprobs(self, reason: str) -> None:
        """Settle on the sampled fallback for good (only before any first-token score was made)."""
        self._logprobs_missing = reason
        self.server_logprobs = False
        self.capabilities = self.capabilities.model_copy(
            update={"logprobs": False, "score_method": ScoreMethod.SAMPLED})  # keeps facts the registry added

    def _candidates(self, logprobs: Any) -> list[tuple[str, float]] | None:
        """(token, logprob) pairs for the first generated token, or None when the server sent none."""
        if not isinstance(logprobs, dict):
            return None
        raw: list[tuple[Any, Any]] = []
        content = logprobs.get("content")
        if isinstance(content, list):  # chat completions shape
            if not content:
                return None
            first = content[0]
            if not isinstance(first, dict):
                raise BackendError(f"{self.base_url} sent malformed logprobs")
            tops = first.get("top_logprobs") or []
            if not isinstance(tops, list):
                raise BackendError(f"{self.base_url} sent malformed top_logprobs")
            raw = [(t.get("token"), t.get("logprob")) for t in tops if isinstance(t, dict)]
            if "token" in first and "logprob" in first:
                raw.append((first["token"], first["logprob"]))
        elif isinstance(logprobs.get("top_logprobs"), list) and logprobs["top_logprobs"]:
            first_top = logprobs["top_logprobs"][0]  # legacy completions shape: [{token: logprob}, ...]
            if not isinstance(first_top, dict):
                raise BackendError(f"{self.base_url} sent malformed top_logprobs")
            raw = list(first_top.items())
        else:
            return None
        pairs: dict[str, float] = {}
        for token, lp in raw:
            if not isinstance(token, str) or isinstance(lp, bool) or not isinstance(lp, int | float):
                raise BackendError(f"{self.base_url} sent a top_logprobs entry without token/logprob")
            pairs.setdefault(token, float(lp))
        return list(pairs.items()) or None

    async def _score_sampled(
        self, wired: list[dict[str, str]], choices: Sequence[str], prefix: str
    ) -> Scores:
        n = self.samples
        longest = max(len(prefix) + len(c) for c in choices)
        # where the answer may come after reasoning or a few words, the samples get room to reach it
        max_tokens = min(64, 4 + longest // 2) if self.score_mode == "first-token" else self.answer_tokens
        gate = asyncio.Semaphore(_SAMPLE_CONCURRENCY)
        retries = 0

        def count_retry(_: BaseException | None) -> None:
            nonlocal retries
            retries += 1

        async def request(payload: dict[str, Any]) -> tuple[str, int, int]:
            async with gate:
                data, _ = await self._post(payload)
            message = self._first_choice(data)["message"]
            text = split_reasoning(message.get("content") or "", reasoning_field(message)).answer
            prompt, _, encoded = self._usage(data)
            return text, prompt, encoded

        async def sample(seed: int) -> tuple[str, int, int]:
            payload = {
                "model": self.model,
                "messages": wired,
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "seed": seed,
            }
            return await retry_call(lambda: request(payload), max_retries=self.sample_retries,
                                    backoff_initial=0.25, backoff_max=5, on_retry=count_retry,
                                    what=f"{self.base_url} (sampled fallback, seed {seed})")

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(sample(seed)) for seed in range(n)]
        except BaseExceptionGroup as group_error:
            raise _representative(group_error, n) from None
        results = [t.result() for t in tasks]

        counts = [0] * len(choices)
        unmatched = 0
        for text, _, _ in results:
            index = _leading_choice(text, choices, prefix)
            if index is None and self.score_mode != "first-token":
                index = _first_choice_word(text, choices)
            if index is None:
                unmatched += 1
            else:
                counts[index] += 1
        k = len(choices)
        scored = [
            ChoiceScore(choice=c, logprob=math.log((counts[i] + 0.5) / (n + 0.5 * k)))
            for i, c in enumerate(choices)
        ]
        return Scores(
            choices=scored,
            method=ScoreMethod.SAMPLED,
            prompt_tokens=sum(r[1] for r in results),
            prompt_tokens_encoded=sum(r[2] for r in results),
            detail={
                "reason": self._logprobs_missing,
                "samples": n,
                "counts": {c: counts[i] for i, c in enumerate(choices)},
                "unmatched": unmatched,
                "answers": [r[0][:60] for r in results],
                "smoothing": "(count + 0.5) / (samples + 0.5 * choices)",
                "retries": retries,
            },
        )

    async def aclose(self) -> None:
        """Close the HTTP clients: this loop's directly, those of other running loops on their loop."""
        with self._clients_lock:
            entries = list(self._clients.items())
            self._clients.clear()
        current = asyncio.get_running_loop()
        for loop, (client, guard) in entries:
            if loop is current:
                await _shutdown(client, guard)
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(_shutdown(client, guard), loop)
                await asyncio.wrap_future(future)
            # a closed loop ran its guards at shutdown (asyncio.run does); nothing is left to close


async def _close_with_loop(client: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Closes ``client`` when its event loop shuts down.

    A started async generator is finalised by ``loop.shutdown_asyncgens()``, which ``asyncio.run`` and
    ``asyncio.Runner`` call before closing the loop, so a backend used through repeated ``run_sync``
    calls does not leave one set of open connections behind per loop.
    """
    try:
        yield
    finally:
        await client.close()


async def _shutdown(client: aiohttp.ClientSession, guard: AsyncGenerator[None, None]) -> None:
    await guard.aclose()  # runs the guard's finally if it was started
    if not client.closed:
        await client.close()


REPLY_BASE_BYTES = 64 * 1024
REPLY_BYTES_PER_TOKEN = 4 * 1024
"""The largest HTTP reply body read: ``REPLY_BASE_BYTES`` plus this many bytes per token asked (``max_tokens``),
room for the JSON, escaped text and a first token's 20 ``top_logprobs``. A larger body is refused unread."""


def reply_limit(payload: dict[str, Any]) -> int:
    """The most bytes read of the reply to ``payload`` (:data:`REPLY_BYTES_PER_TOKEN` × its ``max_tokens``)."""
    tokens = payload.get("max_tokens")
    return REPLY_BASE_BYTES + REPLY_BYTES_PER_TOKEN * (tokens if isinstance(tokens, int) and tokens > 0 else 1)


async def _read_bounded(response: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    """The reply body, or a non-transient BackendError as soon as it is longer than ``limit`` bytes (what was
    read of it is dropped: a reply that large is never parsed, returned or stored)."""
    def too_large(size: str) -> BackendError:
        return BackendError(f"{where} sent a reply of {size} bytes, more than the {limit:,} this client reads for "
                            "the tokens asked; refused (it is not stored)")

    declared = response.content_length
    if declared is not None and declared > limit:
        raise too_large(f"{declared:,}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay seconds or an HTTP date), or None if absent/unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _representative(group: BaseExceptionGroup[BaseException], requests: int) -> BaseException:
    """The one error to raise for parallel requests that failed: a permanent one if there is one (a retry
    cannot help then), else the first; a note says how many of the requests failed."""
    leaves = leaf_errors(group)
    if any(isinstance(leaf, asyncio.CancelledError) for leaf in leaves) and len(leaves) == 1:
        return leaves[0]
    permanent = [leaf for leaf in leaves if not should_retry(leaf)]
    chosen = (permanent or leaves)[0]
    chosen.add_note(f"{len(leaves)} of {requests} sampled-fallback requests failed")
    return chosen


def _leading_choice(answer: str, choices: Sequence[str], prefix: str) -> int | None:
    """Index of the choice the answer starts with (longest wins, whole words), or None."""
    text = answer.lstrip(_ANSWER_LEAD).casefold()
    lead = _norm(prefix)
    if lead and text.startswith(lead):
        text = text[len(lead) :].lstrip(_ANSWER_LEAD)
    best: int | None = None
    best_len = 0
    for i, choice in enumerate(choices):
        target = _norm(choice)
        if text.startswith(target) and len(target) > best_len:
            rest = text[len(target) :]
            if not rest or not rest[0].isalnum():
                best, best_len = i, len(target)
    return best


def _first_choice_word(answer: str, choices: Sequence[str]) -> int | None:
    """Index of the choice the answer's first choice word names (``I would say: **Yes**`` → Yes), or None:
    the sampled fallback's reading of a reply whose answer is not its first word (score answer-token/auto)."""
    targets = [_norm(c) for c in choices]
    for word in answer.split():
        w = word.strip(_ANSWER_LEAD + ".,;!?").casefold()
        if w in targets:
            return targets.index(w)
    return None


def build_openai(rest: str, params: dict[str, str], spec: str) -> OpenAIBackend:
    """The registry's factory for ``openai:MODEL@BASE_URL`` (the ``@`` before the URL's scheme splits them, so a
    model name may hold ``@`` and a URL's own ``@`` is never taken for the split)."""
    found = list(re.finditer(r"@(?=https?://)", rest, flags=re.IGNORECASE))
    if found:
        cut = found[-1].start()
        model, at, url = rest[:cut], "@", rest[cut + 1:]
    else:
        model, at, url = rest.rpartition("@")
    if not at or not model or not url:
        raise BackendSpecError(f"backend spec {spec!r} must look like openai:MODEL@BASE_URL")
    return OpenAIBackend(model=model, base_url=url, **params)
