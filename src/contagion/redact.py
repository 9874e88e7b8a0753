"""Secrets in backend specs and URLs: found, refused, and never printed.

A key belongs in an environment variable (``CONTAGION_API_KEY``, ``OPENAI_API_KEY`` or the provider's own),
never in a spec: a spec is printed, written into every game record, card and report, and used as a cache key.
So the registry refuses a spec that carries one (:func:`secret_in`), with a message that says why and where
the key goes, and every message a command prints goes through :func:`redact` first, so even a refused spec
is echoed without its secret.

What counts as a secret: the user-information part of a URL (``http://user:KEY@host``, ``http://KEY@host``)
and the value of a query parameter named like a credential (:data:`SECRET_PARAMS`: ``api_key``, ``key``,
``token``, ``password`` …).
"""

from __future__ import annotations

import re

SECRET_PARAMS = frozenset({
    "api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "auth_token", "password", "passwd",
    "secret", "client_secret",
})
"""Query parameter names whose values are credentials (compared case-insensitively)."""
MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#@\s]+)@")
_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&?#\s;'\"]+)=(?P<value>[^&#\s;'\"]*)")


def secret_in(text: str) -> str | None:
    """What kind of secret ``text`` carries (``"credentials in a URL (user:password@)"``, ``"the parameter
    'api_key'"``), or None."""
    if _USERINFO.search(text):
        return "credentials in a URL (user:password@host)"
    for match in _PARAM.finditer(text):
        if match.group("name").lower() in SECRET_PARAMS:
            return f"the parameter {match.group('name')!r}"
    return None


def redact(text: str) -> str:
    """``text`` with every URL's user information and every credential parameter's value replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)

    def param(m: re.Match[str]) -> str:
        if m.group("name").lower() in SECRET_PARAMS:
            return f"{m.group('lead')}{m.group('name')}={MASK}"
        return m.group(0)

    return _PARAM.sub(param, text)
