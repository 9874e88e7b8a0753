"""Messages in the shapes agent frameworks use, read as contagion :class:`Message` objects.

The guard reads a conversation in two shapes: contagion :class:`Message` objects, and plain OpenAI-style
dicts — Chat Completions messages (``{"role", "content"}``, with ``tool_calls`` or a list of content
parts) and Responses API input items (``{"type": "message", ...}``, ``function_call``,
``function_call_output``), which is what the OpenAI Agents SDK passes around. It only *reads* them: the
list it returns holds the caller's own objects, untouched, plus the reminder.

Roles map as a chat model sees them: ``developer`` is a system message, a tool result is a user turn
(the model reads it as input, not as its own words), a tool call is the assistant's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from contagion.errors import UserError
from contagion.messages import Message, Role

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "user",
    "function": "user",
}


def content_text(content: Any) -> str:
    """The text of a message's content: a string, a list of content parts, or None (no text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text", part.get("refusal"))
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return str(content)


def _tool_calls_text(calls: Any) -> str:
    out = []
    for call in calls or []:
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        out.append(f"[called {fn.get('name', '?')}({fn.get('arguments', '')})]")
    return "\n".join(out)


def role_of(item: Message | Mapping[str, Any]) -> str | None:
    """The role an item plays in the conversation (``None`` for items without one, e.g. a tool call)."""
    if isinstance(item, Message):
        return item.role
    role = item.get("role") if isinstance(item, Mapping) else getattr(item, "role", None)
    return str(role) if role is not None else None


def to_message(item: Message | Mapping[str, Any]) -> Message | None:
    """One conversation item as a contagion :class:`Message`; ``None`` for items with no text for the
    model (e.g. a reasoning item). Anything that is neither a Message nor a mapping is a user error."""
    if isinstance(item, Message):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump) and not isinstance(item, Mapping):  # a pydantic item (e.g. an Agents SDK output item)
        item = dump(exclude_unset=True)
    if not isinstance(item, Mapping):
        raise UserError(
            f"the guard reads OpenAI-style message dicts or contagion Message objects, not {type(item).__name__}"
        )
    kind = item.get("type")
    if kind == "function_call":
        return Message(role="assistant", content=f"[called {item.get('name', '?')}({item.get('arguments', '')})]")
    if kind == "function_call_output":
        return Message(role="user", content=content_text(item.get("output")))
    role = item.get("role")
    if role is None:
        return None
    mapped = _ROLES.get(str(role))
    if mapped is None:
        raise UserError(f"unknown message role {role!r}; expected one of: {', '.join(_ROLES)}")
    text = content_text(item.get("content"))
    if mapped == "assistant" and item.get("tool_calls"):
        text = "\n".join(t for t in (text, _tool_calls_text(item.get("tool_calls"))) if t)
    return Message(role=mapped, content=text)


def to_messages(items: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    """The conversation as contagion Messages (items without text for the model left out)."""
    out = []
    for item in items:
        message = to_message(item)
        if message is not None:
            out.append(message)
    return out


def dumps(value: Any) -> str:
    """JSON text for the guard's files and logs (UTF-8 kept, stable key order)."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
