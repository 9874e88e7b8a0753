"""Server options of an ``openai:`` backend that the OpenAI schema lacks, and chat templates without a system role.

- ``extra_body`` — a JSON object whose fields are sent with every request, for options servers read from
  the request body: ``{"chat_template_kwargs": {"enable_thinking": false}}`` (vLLM, SGLang and llama.cpp
  server pass it to the chat template: Qwen3 then answers without thinking), ``{"reasoning_effort":
  "low"}``, ``{"top_k": 1}``. Fields contagion sets itself (:data:`RESERVED`) are refused: the instrument's
  requests must stay what the method says they are.
- ``system_role`` — how system messages reach a template: ``system`` (as they are, the default), ``user``
  (sent with the user role) or ``merge`` (each system message's text put at the head of the next user
  message, so turns still alternate — for templates such as Gemma's that reject a system role and two
  user turns in a row).

Both change what the model is asked, so both are part of the backend's identity (and of every record's
backend) whenever they are not the default. In a spec they are options after ``?``
(``openai:qwen3@http://host/v1?system_role=merge&extra_body={"chat_template_kwargs":{"enable_thinking":false}}``,
URL-encoded where a shell or YAML needs it); a config gives them per model under ``model_options``
(:func:`with_options` writes them into the spec).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from contagion.errors import BackendSpecError

SYSTEM_ROLES: tuple[str, ...] = ("system", "user", "merge")
"""Values of ``system_role``."""

JSON_SAFE = '{}[]":,_-.!~*()@/'
"""Characters a JSON option keeps unescaped in a spec (readable), while ``&``, ``#``, ``%``, ``+``, ``=`` and
spaces are escaped so the spec's options still split where they should."""

RESERVED: frozenset[str] = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                      "top_p", "logprobs", "top_logprobs", "seed", "stop", "n", "stream",
                                      "echo"})
"""Request fields contagion sets itself; ``extra_body`` may not override them."""


def parse_extra_body(text: str) -> dict[str, Any]:
    """The ``extra_body`` option: a JSON object without reserved fields, or a clear error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendSpecError(
            f"option extra_body of an openai: backend must be a JSON object, e.g. "
            f'{{"chat_template_kwargs": {{"enable_thinking": false}}}} (got {text[:80]!r}: {exc.msg})'
        ) from None
    if not isinstance(value, dict):
        raise BackendSpecError(f"option extra_body of an openai: backend must be a JSON object, not "
                               f"{type(value).__name__} ({text[:80]!r})")
    clash = sorted(set(value) & RESERVED)
    if clash:
        raise BackendSpecError(f"extra_body may not set {', '.join(clash)}: contagion sets these fields itself "
                               "(scoring depends on them)")
    return value


def canonical_json(value: Any) -> str:
    """One spelling of a JSON value (sorted keys, no spaces): identities do not depend on how it was typed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_system_role(text: str) -> str:
    role = str(text).strip().lower()
    if role not in SYSTEM_ROLES:
        raise BackendSpecError(f"option system_role of an openai: backend must be one of {', '.join(SYSTEM_ROLES)} "
                               f"(got {text!r})")
    return role


def apply_system_role(messages: Sequence[Mapping[str, Any]], role: str) -> list[dict[str, Any]]:
    """Wire messages as a template with ``role`` handling takes them (module docstring)."""
    if role == "system":
        return [dict(m) for m in messages]
    if role == "user":
        return [{**m, "role": "user"} if m.get("role") == "system" else dict(m) for m in messages]
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for m in messages:
        if m.get("role") == "system":
            pending.append(str(m.get("content", "")))
            continue
        if pending and m.get("role") == "user":
            m = {**m, "content": "\n\n".join([*pending, str(m.get("content", ""))])}
            pending = []
        out.append(dict(m))
    if pending:
        out.append({"role": "user", "content": "\n\n".join(pending)})
    return out


def with_options(spec: str, options: Mapping[str, Any] | None) -> str:
    """``spec`` with backend options appended after ``?`` (JSON values written canonically and URL-encoded),
    as a config's ``model_options`` gives them."""
    if not options:
        return spec
    parts = []
    for key in sorted(options):
        value = options[key]
        if isinstance(value, dict | list):
            text = canonical_json(value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        parts.append(f"{key}={quote(text, safe=JSON_SAFE)}")
    return spec + ("&" if "?" in spec else "?") + "&".join(parts)
