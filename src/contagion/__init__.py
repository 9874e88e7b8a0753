"""contagion: study and stop misalignment contagion between language-model agents.

The layers, lowest first: ``messages`` and ``backends`` (models), ``games`` (dilemmas and the round
engine), ``traits`` (implicit-trait assessment), ``steering`` (interventions, SIT), ``experiment``
(configs, runner, store), ``analysis`` (statistics, report), ``viewer`` and ``cli``. A lower layer
never imports a higher one.
"""

__version__ = "0.1.0"
