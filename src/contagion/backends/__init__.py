"""Model backends behind one interface; see :mod:`contagion.backends.base` and ``registry``."""

from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
    run_sync,
)
from contagion.backends.registry import VALID_FORMS, resolve

__all__ = [
    "VALID_FORMS",
    "Backend",
    "Capabilities",
    "ChoiceScore",
    "Completion",
    "GenerationConfig",
    "ScoreMethod",
    "Scores",
    "resolve",
    "run_sync",
]
