"""The white-box drift monitor: which trait directions a trial's agents are watched on.

A trial with a :class:`MonitorSpec` plays each agent under study on a *monitored* sibling of its backend
(:meth:`contagion.backends.base.Backend.monitored`): the same answers, plus, at every turn, the residual stream
of the prompt's last token projected on each trait's unit direction (at the layer the vectors file chose for
that trait). The projections come from the forward pass the turn makes anyway; the game record keeps them per
player and turn (``PlayerRecord.monitor``). It is not an intervention: it combines with any of them (with
``vector`` steering it reads the steered stream).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contagion.backends.base import Backend
from contagion.errors import UserError
from contagion.steering.vector import load_vectors


class MonitorSpec(BaseModel):
    """Which vectors file (made by ``contagion vectors`` for the agents' model) and which of its traits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(description="A vectors file made by `contagion vectors` for the agents' model.")
    traits: tuple[str, ...] = Field((), description="The traits to watch (default: every trait in the file), "
                                                    "each at the layer the file chose for it.")

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        """A bare path is the file (``monitor: vectors.json``)."""
        return {"file": data} if isinstance(data, str) else data

    def directions(self) -> dict[str, tuple[int, list[float]]]:
        """Trait -> (chosen layer, direction there); UserError for a bad file or a trait it does not have."""
        vf = load_vectors(self.file)
        missing = [t for t in self.traits if t not in vf.traits]
        if missing:
            raise UserError(f"monitor: trait(s) {', '.join(map(repr, missing))} not in {self.file} "
                            f"(it has: {', '.join(vf.traits)})")
        traits = self.traits or tuple(vf.traits)
        return {t: (vf.traits[t].layer, vf.traits[t].directions[vf.traits[t].layer]) for t in traits}

    def label(self) -> str:
        """What a monitored backend's identity names: the traits at their layers and the file's fingerprint."""
        vf = load_vectors(self.file)
        watched = ",".join(f"{t}@{layer}" for t, (layer, _) in self.directions().items())
        return f"{watched};vectors={vf.fingerprint()[:12]}"


def monitor_backend(monitor: MonitorSpec, backend: Backend) -> Backend:
    """``backend`` monitored on ``monitor``'s directions; UserError on a backend without activations."""
    if not backend.capabilities.activations:
        raise UserError(f"the monitor needs a backend with activations (hf:embedded or hf:PATH_OR_ID); "
                        f"{backend.identity} has none")
    return backend.monitored(monitor.directions(), monitor.label())
