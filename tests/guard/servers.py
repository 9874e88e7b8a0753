"""The adapter tests' loopback responder: passes each request on to the suite's llama.cpp server
(``llama_server`` in tests/conftest.py) after the project's loopback server has recorded its body."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from contagion.testing.loopback import RawResponse


def forward_to(base_url: str) -> Callable[[dict[str, Any]], RawResponse]:
    """A loopback responder passing each chat request on to ``base_url`` and its reply back unchanged
    (the loopback server records the request body first)."""

    def responder(body: dict[str, Any]) -> RawResponse:
        request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as reply:
                return RawResponse(reply.status, reply.read(), content_type=reply.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return RawResponse(exc.code, exc.read())

    return responder
