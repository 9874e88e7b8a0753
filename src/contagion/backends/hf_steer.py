"""The ``hf`` backend's residual stream: reading it (for trait directions) and adding to it (steering).

:class:`ResidualAccess` is a part of :class:`contagion.backends.hf.HFBackend`. The residual stream of
layer ``l`` (0-based) is the output of decoder block ``l``: what block ``l + 1`` reads. Reading and
steering use the same modules, so a direction measured at layer ``l`` is added exactly where it was read.

* :meth:`ResidualAccess.reply_activations` — one forward pass of a chat prompt plus an assistant reply,
  returning per layer the mean residual vector over the reply's tokens. It bypasses the backend's
  prompt cache (no cache is read or written), so it never changes what later calls see.
* :meth:`ResidualAccess.monitored` — a sibling backend that answers exactly as this one and attaches to every
  reply and score (``probes``) the residual stream of the prompt's last token — the position whose output is
  the reply's first token — projected on unit trait directions: a drift monitor read from the forward pass
  the call makes anyway (no extra model call). With steering, it reads the steered stream.
* :meth:`ResidualAccess.steered` — a sibling backend on the same loaded model that adds fixed vectors to
  the residual stream of chosen layers on every forward pass it makes (generation and scoring). It has
  its own prompt cache and its own identity (so the response cache keys differ too): a steered and an
  unsteered call never share cached state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from contagion.backends.base import common_prefix
from contagion.backends.hf_model import LoadedModel, require
from contagion.errors import BackendError, UserError
from contagion.messages import Message

T = TypeVar("T")


def decoder_layers(model: Any) -> list[Any]:
    """The decoder blocks of a causal LM, in order (``model.model.layers`` for Llama-like models)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    count = getattr(model.config, "num_hidden_layers", None)
    if layers is None or count is None or len(layers) < count:
        raise BackendError("cannot find the decoder layers ('model.layers') of this model architecture")
    return list(layers)[:count]


def _hidden(output: Any) -> Any:
    """A decoder block's hidden states (blocks return a tensor, or a tuple starting with it)."""
    return output[0] if isinstance(output, tuple) else output


class ResidualAccess:
    """Residual-stream read-out and steering for :class:`~contagion.backends.hf.HFBackend` (which provides
    the model, prompt rendering and encoding)."""

    spec: str
    steering: dict[int, Any]  # layer -> tensor added to that block's output (empty: not steered)
    steering_label: str
    monitor: dict[str, tuple[int, Any]]  # trait -> (layer, unit direction tensor) (empty: not monitored)
    monitor_label: str
    _residuals: dict[int, Any]  # layer -> that block's output of the last forward pass (monitored calls)

    # provided by the backend
    def loaded(self) -> LoadedModel:
        raise NotImplementedError

    def render(self, messages: Sequence[Message]) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    async def _call(self, fn: Callable[[LoadedModel], T]) -> T:
        raise NotImplementedError

    def _sibling(self) -> Any:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- shape

    def residual_shape(self) -> tuple[int, int]:
        """(layers, hidden size) of the loaded model."""
        config = self.loaded().model.config
        return int(config.num_hidden_layers), int(config.hidden_size)

    # ----------------------------------------------------------------------------------- reading

    async def reply_activations(self, messages: Sequence[Message], reply: str) -> np.ndarray:
        """Per layer, the mean residual vector over the tokens of ``reply`` as the assistant's answer to
        ``messages``: an array of shape (layers, hidden size), float64.

        The prompt is the chat template of ``messages`` with the generation prompt, followed by the reply
        text; the reply's tokens are those after the prompt's (the reply tokenised in running text). Runs
        one forward pass without any key/value cache, with this backend's steering applied if it has any.
        """
        if not reply.strip():
            raise ValueError("the reply must have text")
        return await self._call(lambda state: self._reply_activations(state, messages, reply))

    def _reply_activations(self, state: LoadedModel, messages: Sequence[Message], reply: str) -> np.ndarray:
        torch = require("torch")
        prompt_text = self.render(messages)
        prompt = self.encode(prompt_text)
        whole = self.encode(prompt_text + reply)
        start = len(prompt) if whole[: len(prompt)] == prompt else common_prefix(prompt, whole)
        if start >= len(whole):
            raise ValueError(f"the reply {reply!r} adds no tokens to the prompt")
        blocks = decoder_layers(state.model)
        kept: list[Any] = [None] * len(blocks)

        def make_hook(layer: int) -> Callable[..., None]:
            def hook(module: Any, args: Any, output: Any) -> None:
                kept[layer] = _hidden(output)[0, start:, :].double().mean(dim=0)

            return hook

        handles = [b.register_forward_hook(make_hook(i)) for i, b in enumerate(blocks)]
        try:
            kwargs: dict[str, Any] = {"use_cache": False}
            if state.keep_arg is not None:
                kwargs[state.keep_arg] = 1
            state.model(input_ids=torch.tensor([whole], dtype=torch.long), **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if any(k is None for k in kept):
            raise BackendError(f"{self.spec}: a decoder layer did not run")
        return np.stack([k.numpy() for k in kept])

    # ----------------------------------------------------------------------------------- steering

    def steered(self, additions: Mapping[int, Sequence[float]], label: str) -> Any:
        """A backend on the same model that adds ``additions[l]`` to the output of decoder block ``l`` at
        every position of every forward pass (prompt, generated tokens and scored continuations).

        ``label`` names the steering in the backend's identity (with a hash of the vectors), so cached
        responses of steered and unsteered calls never mix. Raises UserError when a layer is out of
        range or a vector's length is not the model's hidden size.
        """
        torch = require("torch")
        layers, hidden = self.residual_shape()
        if not additions:
            raise UserError("steering needs at least one layer")
        tensors: dict[int, Any] = {}
        digest = hashlib.sha256()
        for layer, vector in sorted(additions.items()):
            if not 0 <= layer < layers:
                raise UserError(f"steering layer {layer} is out of range: {self.spec} has layers 0-{layers - 1}")
            values = [float(v) for v in vector]
            if len(values) != hidden:
                raise UserError(f"a steering vector of length {len(values)} does not fit {self.spec} "
                                f"(hidden size {hidden}): were the vectors made for another model?")
            tensors[layer] = torch.tensor(values, dtype=torch.float32)
            digest.update(json.dumps([layer, values]).encode())
        twin = self._sibling()
        twin.steering = tensors
        twin.steering_label = f"{label}#{digest.hexdigest()[:12]}"
        twin.monitor, twin.monitor_label = self.monitor, self.monitor_label
        return twin

    # ----------------------------------------------------------------------------------- monitoring

    def monitored(self, directions: Mapping[str, tuple[int, Sequence[float]]], label: str) -> Any:
        """A backend on the same model, with the same steering and the same prompt cache, that also reports
        ``probes``: per trait,
        the residual stream of layer ``directions[trait][0]`` at the prompt's last token, projected on the
        direction ``directions[trait][1]`` scaled to unit length (a dot product in the residual stream's own
        units).

        Its answers are this backend's; its identity names the monitor, so cached answers (which carry their
        probes) never come from an unmonitored call. Raises UserError for a layer out of range, a vector of
        the wrong length or a zero vector.
        """
        torch = require("torch")
        layers, hidden = self.residual_shape()
        if not directions:
            raise UserError("the monitor needs at least one trait direction")
        units: dict[str, tuple[int, Any]] = {}
        digest = hashlib.sha256()
        for trait, (layer, vector) in sorted(directions.items()):
            if not 0 <= layer < layers:
                raise UserError(f"monitor layer {layer} of {trait!r} is out of range: {self.spec} has layers "
                                f"0-{layers - 1}")
            values = np.asarray([float(v) for v in vector], dtype=np.float64)
            if len(values) != hidden:
                raise UserError(f"a direction of length {len(values)} does not fit {self.spec} (hidden size "
                                f"{hidden}): were the vectors made for another model?")
            norm = float(np.linalg.norm(values))
            if not norm > 0:
                raise UserError(f"the direction of {trait!r} at layer {layer} is zero: nothing to project on")
            units[trait] = (layer, torch.tensor(values / norm, dtype=torch.float32))
            digest.update(json.dumps([trait, layer, values.tolist()]).encode())
        twin = self._sibling()
        twin.steering, twin.steering_label = self.steering, self.steering_label
        # reading changes no activation: the twin shares this backend's prompt cache, so a monitored game
        # encodes exactly what the unmonitored one does (a steered sibling never may)
        twin._prompt_cache = self._prompt_cache  # type: ignore[attr-defined]
        twin.monitor = units
        twin.monitor_label = f"{label}#{digest.hexdigest()[:12]}"
        return twin

    @contextmanager
    def _monitor_hooks(self, state: LoadedModel) -> Iterator[None]:
        """While open, :attr:`_residuals` holds each monitored layer's output of the latest forward pass (a
        reference, no copy). Opened after the steering hooks, so it reads the steered stream."""
        self._residuals = {}
        if not self.monitor:
            yield
            return
        blocks = decoder_layers(state.model)

        def make_hook(layer: int) -> Callable[..., None]:
            def hook(module: Any, args: Any, output: Any) -> None:
                self._residuals[layer] = _hidden(output)

            return hook

        handles = [blocks[layer].register_forward_hook(make_hook(layer))
                   for layer in sorted({layer for layer, _ in self.monitor.values()})]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._residuals = {}

    def _probes(self, position: int = -1) -> dict[str, float] | None:
        """The monitor's projections at ``position`` of the latest forward pass (its last token by default),
        rounded to 6 decimals; None when this backend is not monitored."""
        if not self.monitor:
            return None
        out: dict[str, float] = {}
        for trait, (layer, unit) in self.monitor.items():
            residual = self._residuals.get(layer)
            if residual is None:
                raise BackendError(f"{self.spec}: the monitored layer {layer} did not run")
            out[trait] = round(float(residual[0, position, :].float() @ unit), 6)
        return out

    @contextmanager
    def _steering_hooks(self, state: LoadedModel) -> Iterator[None]:
        """While open (under the model's lock), this backend's vectors are added to the residual stream."""
        if not self.steering:
            yield
            return
        blocks = decoder_layers(state.model)

        def make_hook(vector: Any) -> Callable[..., Any]:
            def hook(module: Any, args: Any, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (output[0] + vector, *output[1:])
                return output + vector

            return hook

        handles = [blocks[layer].register_forward_hook(make_hook(v)) for layer, v in self.steering.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

