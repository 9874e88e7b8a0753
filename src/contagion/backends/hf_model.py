"""Loading a transformers model for the ``hf`` backend: once per process and source, in float32 on CPU with
eager attention (so attention weights are available), shared by every backend naming the same source."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contagion.errors import BackendUnavailableError, MissingExtraError

WHAT = "the hf backend"
EXTRA = "whitebox"
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class LoadedModel:
    """A model and tokenizer shared by every backend naming the same source; ``lock`` serialises calls."""

    model: Any
    tokenizer: Any
    cache_arg: str  # "cache" (transformers >= 5.x) or "past_key_values"
    keep_arg: str | None  # "logits_to_keep", "num_logits_to_keep" or None
    stop_ids: frozenset[int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    texts: dict[int, str] = field(default_factory=dict)  # token id -> its text, for first-token candidates


_loaded: dict[tuple[str, str | None], LoadedModel] = {}
_load_lock = threading.Lock()


def require(module: str) -> Any:
    """Import an optional dependency, or raise the error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(WHAT, EXTRA, module) from exc


def check_installed(modules: Sequence[str]) -> None:
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(WHAT, EXTRA, module)


def load_model(source: str, gguf_file: str | None) -> LoadedModel:
    """Load (once per process and source) a model in float32 on CPU with eager attention."""
    key = (source, gguf_file)
    with _load_lock:
        state = _loaded.get(key)
        if state is not None:
            return state
        torch = require("torch")
        transformers = require("transformers")
        if gguf_file:
            require("gguf")
        extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        where = str(Path(source) / gguf_file) if gguf_file else source
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **extra)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                source, attn_implementation="eager", **{_dtype_arg(transformers): torch.float32}, **extra
            )
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot load the model {where} with transformers ({exc}). Give a local model directory, a "
                ".gguf file, or a hub ID already downloaded (offline: HF_HUB_OFFLINE=1)"
            ) from exc
        model.eval()
        params = inspect.signature(model.forward).parameters
        cache_arg = "cache" if "cache" in params else "past_key_values"
        keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None)
        state = LoadedModel(
            model=model,
            tokenizer=tokenizer,
            cache_arg=cache_arg,
            keep_arg=keep_arg,
            stop_ids=frozenset(_stop_ids(model, tokenizer)),
        )
        _loaded[key] = state
        return state


def _dtype_arg(transformers: Any) -> str:
    """``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    try:
        major, minor = (int(part) for part in str(transformers.__version__).split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn token ids: the tokenizer's and the generation config's EOS, and known end markers."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[m] for m in _END_MARKERS if m in vocab)
    return ids


def forget_model(source: str, gguf_file: str | None) -> None:
    """Drop the shared model of this source; it is freed once no backend holds it."""
    with _load_lock:
        _loaded.pop((source, gguf_file), None)
