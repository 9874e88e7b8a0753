"""A transformers backend for white-box work: log-likelihoods, prefix reuse and attention read-out.

The backend itself (generation, scoring, prefix reuse) is here; loading the model is
:mod:`contagion.backends.hf_model`, the attention read-out :mod:`contagion.backends.hf_attention`.

``hf:embedded`` loads the embedded SmolLM2-135M-Instruct GGUF file through transformers (de-quantised
to float32); ``hf:PATH`` loads a local model directory or a ``.gguf`` file; ``hf:ORG/NAME`` a model
from the Hugging Face hub cache (set ``HF_HUB_OFFLINE=1`` to stay offline). Options after ``?``:
``prefix_reuse`` (``1``, ``blocks`` or ``0``; default 1) and ``prefill_chunk`` (tokens per forward pass,
default 512; with ``blocks`` the block size, default 64).

The model runs on CPU in float32 with eager attention, so attention weights are available. It is
loaded on first use, shared by every backend in the process that names the same source, and run in a
worker thread under one lock per model (it is CPU bound; parallel calls would only thrash).

**Prefix reuse.** The backend keeps the key/value cache of the last prompt it ran, keyed by its token
ids. A new prompt whose tokens start with (part of) the cached ones only encodes the new suffix: the
cache is cropped to the longest common prefix. That is exact to float32 rounding, not bitwise: a matrix
product's rounding depends on how many rows it multiplies at once (a 5-token suffix after a reused prefix
and the same tokens inside a full pass differ by ~2e-5 in a logit), so a score depends, in its fifth
digit, on what the cache held — on the order in which concurrent games reached the model, hence on the
executor. With ``prefix_reuse=blocks`` every prompt is encoded in the same blocks of ``prefill_chunk``
tokens counted from its first, and reuse resumes only at a whole block they share: every number is then
a function of the prompt (and of torch's thread count, which changes a small product's rounding) alone —
bitwise the same record from any executor, resume or call order at the same threads — at a cost (on a
measured 2-game grid, 1.54× the wall time of exact reuse; see :meth:`HFBackend._extend`).

Without a prefix (question and action format v2), ``score_choices`` reads the first reply token's
distribution after the prompt and scores its top-k tokens as a server's ``top_logprobs`` are
(:mod:`contagion.backends.first_token`); after a prefix (v1) it encodes the shared prompt once and scores
each continuation from that cache, cropping it back after each choice. With ``prefix_reuse=0`` nothing is
kept: every choice is scored by one full forward pass over prompt and continuation — the reference that
the cached path is tested against.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contagion.backends.base import (
    Backend,
    Capabilities,
    ChoiceScore,
    Completion,
    GenerationConfig,
    ScoreMethod,
    Scores,
    common_prefix,
    split_prefix,
)
from contagion.backends.first_token import score_candidates, targets_of, top_candidates
from contagion.backends.hf_attention import TEMPLATE, AttentionReadout, AttentionShares, TokenSegments
from contagion.backends.hf_model import LoadedModel, check_installed, forget_model, load_model, require
from contagion.backends.hf_steer import ResidualAccess
from contagion.backends.paths import embedded_model_path
from contagion.errors import BackendSpecError, BackendUnavailableError
from contagion.messages import Message, wire

if TYPE_CHECKING:
    import torch

__all__ = ["TEMPLATE", "AttentionShares", "HFBackend", "LoadedModel", "TokenSegments", "build_hf"]

T = TypeVar("T")

_OPTIONS = ("prefix_reuse", "prefill_chunk")
PREFILL_BLOCK = 64
"""Tokens per block with ``prefix_reuse=blocks`` (option ``prefill_chunk``): reuse resumes only at a multiple of
it, so a call re-encodes up to this many tokens minus one more than an exact reuse would, while small blocks
make a long cold prompt slower per token (embedded model, 2 cores: 2.7 ms at 512, 3.5 at 64, 5.4 at 32)."""


@dataclass
class _PromptCache:
    """Key/value cache of the tokens in ``ids`` (one sequence, batch size 1)."""

    cache: Any = None
    ids: list[int] = field(default_factory=list)
    blocks: int = 0
    """How many leading tokens were encoded as whole blocks of ``prefill_chunk`` tokens counted from the first
    (the only keys and values a later prompt reuses: see :meth:`HFBackend._extend`)."""


def _flag(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise BackendSpecError(f"option {name}={value!r} of the hf backend must be 1, 0 or blocks")




class HFBackend(AttentionReadout, ResidualAccess, Backend):
    """A transformers causal LM on CPU (float32, eager attention) with full-continuation scoring."""

    def __init__(self, path_or_id: str, **params: str) -> None:
        bad = set(params) - set(_OPTIONS)
        if bad:
            raise BackendSpecError(
                f"unknown option(s) {sorted(bad)} for hf:{path_or_id}; valid: {sorted(_OPTIONS)}"
            )
        self.spec = f"hf:{path_or_id}"
        reuse = params.get("prefix_reuse", "1").strip().lower()
        self.whole_blocks = reuse == "blocks"
        self.prefix_reuse = self.whole_blocks or _flag(reuse, "prefix_reuse")
        try:
            self.prefill_chunk = int(params.get("prefill_chunk", str(PREFILL_BLOCK if self.whole_blocks else 512)))
        except ValueError:
            raise BackendSpecError("option prefill_chunk of the hf backend must be an integer") from None
        if self.prefill_chunk < 1:
            raise BackendSpecError("option prefill_chunk of the hf backend must be at least 1")
        self._source, self._gguf_file = self._locate(path_or_id)
        needed = ["torch", "transformers"] + (["gguf"] if self._gguf_file else [])
        check_installed(needed)
        self.capabilities = Capabilities(
            logprobs=True,
            score_method=ScoreMethod.FULL,
            prefix_caching=self.prefix_reuse,
            attention=True,
            activations=True,
            deterministic=True,
            parallel_games=1,  # one call at a time, under the model's lock: more games only share its cache
        )
        self._state: LoadedModel | None = None
        self._prompt_cache = _PromptCache()
        self._path_or_id = path_or_id
        self._params = dict(params)
        self.steering = {}
        self.steering_label = ""
        self.monitor = {}
        self.monitor_label = ""
        self._residuals = {}

    @property
    def identity(self) -> str:
        """The spec, plus the steering (label and vector hash) of a steered backend and the monitor of a
        monitored one."""
        steer = f"+steer:{self.steering_label}" if self.steering else ""
        monitor = f"+monitor:{self.monitor_label}" if self.monitor else ""
        return f"{self.spec}{steer}{monitor}"

    def _sibling(self) -> HFBackend:
        """A new backend on the same model (shared once loaded) with an empty prompt cache of its own."""
        twin = HFBackend(self._path_or_id, **self._params)
        twin._state = self._state
        return twin

    @staticmethod
    def _locate(path_or_id: str) -> tuple[str, str | None]:
        """(directory or hub ID, GGUF file name or None); a missing local path is an error now."""
        if path_or_id == "embedded":
            gguf = embedded_model_path()
            return str(gguf.parent), gguf.name
        path = Path(path_or_id).expanduser()
        looks_local = path.is_absolute() or path_or_id.startswith((".", "~")) or path_or_id.endswith(".gguf")
        if path.exists():
            if path.is_file():
                if path.suffix != ".gguf":
                    raise BackendUnavailableError(
                        f"hf:{path_or_id} is a file but not a .gguf file; give a model directory or a .gguf"
                    )
                return str(path.parent), path.name
            return str(path), None
        if looks_local:
            raise BackendUnavailableError(f"no model at {path}: the path does not exist")
        return path_or_id, None

    # ----------------------------------------------------------------------------------- loading

    def loaded(self) -> LoadedModel:
        """The model and tokenizer, loading them on first use (about 20 s for the embedded model)."""
        if self._state is None:
            self._state = load_model(self._source, self._gguf_file)
        return self._state

    async def aclose(self) -> None:
        """Drop this backend's model reference and cache; the model is freed once no backend uses it."""
        self._state = None
        self._prompt_cache = _PromptCache()
        forget_model(self._source, self._gguf_file)

    async def _call(self, fn: Callable[[LoadedModel], T]) -> T:
        """Run ``fn`` in a worker thread, under the model's lock, without autograd."""

        def work() -> T:
            state = self.loaded()
            torch = require("torch")
            with state.lock, torch.inference_mode(), self._steering_hooks(state), self._monitor_hooks(state):
                return fn(state)

        return await asyncio.to_thread(work)

    # ----------------------------------------------------------------------------------- prompts

    def render(self, messages: Sequence[Message]) -> str:
        """The chat-templated prompt text, ending with the generation prompt."""
        text = self.loaded().tokenizer.apply_chat_template(
            wire(messages), add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of already templated text (no special tokens added again)."""
        return list(self.loaded().tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------------------- the model

    def _forward(self, state: LoadedModel, ids: Sequence[int], cache: Any, logits: int) -> Any:
        """One forward pass of ``ids`` after the tokens in ``cache``; returns the last ``logits`` rows."""
        torch = require("torch")
        kwargs: dict[str, Any] = {"use_cache": cache is not None}
        if cache is not None:
            kwargs[state.cache_arg] = cache
        if state.keep_arg is not None:
            kwargs[state.keep_arg] = logits
        out = state.model(input_ids=torch.tensor([list(ids)], dtype=torch.long), **kwargs)
        return out.logits[0, -logits:, :] if logits else None

    def _new_cache(self, state: LoadedModel) -> Any:
        transformers = require("transformers")
        try:
            return transformers.DynamicCache(config=state.model.config)
        except TypeError:  # transformers < 4.56 takes no config
            return transformers.DynamicCache()

    @staticmethod
    def _crop(pc: _PromptCache, length: int) -> None:
        remove = len(pc.ids) - length
        if remove > 0:
            pc.cache.crop(-remove)  # a negative argument removes tokens, in every transformers version
            del pc.ids[length:]
        pc.blocks = min(pc.blocks, length)

    def _extend(
        self, state: LoadedModel, ids: Sequence[int], *, keep_new: int
    ) -> tuple[_PromptCache, Any, int]:
        """Bring a cache to hold exactly ``ids``, running at least ``keep_new`` of them through the model.

        Returns the cache, the logits of the last position encoded (None if nothing was encoded) and
        the number of tokens encoded. With prefix reuse the backend's cache is cropped to the longest
        common prefix with ``ids`` and only the rest is encoded, in chunks of ``prefill_chunk`` tokens
        (which bounds the eager attention matrices to heads × chunk × length).

        With ``prefix_reuse=blocks`` the chunks are fixed **blocks**: tokens ``[0, B)``, ``[B, 2B)``, … and
        the rest (``B`` = ``prefill_chunk``); the common prefix is rounded down to a whole block, and keys
        and values of a partial last block, of generated tokens or of scored continuations are never
        reused. Each block is then always computed from the same tokens in the same shape, so the result
        does not depend on what the cache held. Cost: up to B − 1 tokens re-encoded per call, and small
        blocks encode a long cold prompt less efficiently.
        """
        block = self.prefill_chunk
        pc = self._prompt_cache if self.prefix_reuse else _PromptCache()
        keep = min(common_prefix(pc.ids, ids), len(ids) - keep_new) if pc.cache is not None else 0
        if self.whole_blocks:
            keep = min(keep, pc.blocks)
            keep -= keep % block
        if keep <= 0:
            pc.cache, pc.ids, pc.blocks, keep = self._new_cache(state), [], 0, 0
        else:
            self._crop(pc, keep)
        last = None
        try:
            for start in range(keep, len(ids), block):
                chunk = ids[start : start + block]
                last = self._forward(state, chunk, pc.cache, 1)
                pc.ids.extend(chunk)
                if len(chunk) == block:
                    pc.blocks = start + block
        except BaseException:
            pc.cache, pc.ids, pc.blocks = None, [], 0  # a half-updated cache must not be reused
            raise
        return pc, None if last is None else last[-1], len(ids) - keep

    @property
    def _reuse_label(self) -> bool | str:
        """What a score's detail says of prefix reuse: True, False or ``"blocks"``."""
        return "blocks" if self.whole_blocks else self.prefix_reuse

    def _invalidate(self) -> None:
        self._prompt_cache = _PromptCache()

    # ----------------------------------------------------------------------------------- generate

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        """Greedy at temperature 0, else seeded sampling (temperature, top-p); cut at the first stop."""
        return await self._call(lambda state: self._generate(state, messages, config))

    def _generate(
        self, state: LoadedModel, messages: Sequence[Message], config: GenerationConfig
    ) -> Completion:
        torch = require("torch")
        t0 = time.perf_counter()
        prompt = self.encode(self.render(messages))
        pc, logits, encoded = self._extend(state, prompt, keep_new=1)
        probes = self._probes()  # the prompt's last token: read before any generated token runs
        generator = torch.Generator()
        generator.manual_seed(
            config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "little")
        )
        out: list[int] = []
        text = ""
        try:
            while len(out) < config.max_tokens:
                token = self._pick(logits, config, generator)
                out.append(token)
                if token in state.stop_ids:
                    break
                text = state.tokenizer.decode(out, skip_special_tokens=True)
                hits = [i for i in (text.find(s) for s in config.stop if s) if i >= 0]
                if hits:
                    text = text[: min(hits)]
                    break
                if len(out) < config.max_tokens:
                    logits = self._forward(state, [token], pc.cache, 1)[-1]
                    pc.ids.append(token)
        except BaseException:
            self._invalidate()
            raise
        if out and out[-1] in state.stop_ids:
            text = state.tokenizer.decode(out[:-1], skip_special_tokens=True)
        return Completion(
            text=text,
            prompt_tokens=len(prompt),
            completion_tokens=len(out),
            prompt_tokens_encoded=encoded,
            seconds=time.perf_counter() - t0,
            probes=probes,
        )

    @staticmethod
    def _pick(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator) -> int:
        torch = require("torch")
        if config.temperature == 0.0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / config.temperature, dim=-1)
        if config.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_p, dim=-1) - sorted_p >= config.top_p  # always keeps the top token
            sorted_p[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=generator).item())

    # ----------------------------------------------------------------------------------- scoring

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        """Without ``prefix`` (format v2): the first reply token's top-k, scored as a server's. With one (v1):
        the sum of token log-probs of each choice after the templated prompt plus ``prefix``."""
        if not choices:
            raise ValueError("score_choices needs at least one choice")
        return await self._call(lambda state: self._score(state, messages, choices, prefix))

    def _continuations(self, prompt_text: str, prompt: list[int], choices: Sequence[str]) -> list[list[int]]:
        """Tokens of each choice: the tail of ``tokenize(prompt + choice)`` when that starts with the
        prompt's tokens (the tokenisation a model sees in running text), else the choice tokenised alone."""
        conts = []
        for choice in choices:
            whole = self.encode(prompt_text + choice)
            cont = whole[len(prompt) :] if whole[: len(prompt)] == prompt else self.encode(choice)
            if not cont:
                raise ValueError(f"choice {choice!r} has no tokens")
            conts.append(cont)
        return conts

    @staticmethod
    def _token_text(state: LoadedModel, token: int) -> str:
        """A token's text decoded on its own, as a server reports a top token."""
        text = state.texts.get(token)
        if text is None:
            known = token < len(state.tokenizer)
            text = state.tokenizer.decode([token], clean_up_tokenization_spaces=False) if known else ""
            state.texts[token] = text
        return str(text)

    def _first_token(self, state: LoadedModel, messages: Sequence[Message], choices: Sequence[str]) -> Scores:
        """Format v2: the reply's first-token distribution right after the generation prompt, its top-k
        tokens scored as a server's ``top_logprobs`` are (:mod:`contagion.backends.first_token`)."""
        torch = require("torch")
        t0 = time.perf_counter()
        targets_of(choices)
        prompt = self.encode(self.render(messages))
        _, last, encoded = self._extend(state, prompt, keep_new=1)
        probes = self._probes()
        first = torch.log_softmax(last.double(), dim=-1).numpy()
        candidates = top_candidates(first, lambda token: self._token_text(state, token))
        logprobs, detail = score_candidates(candidates, choices)
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.FIRST_TOKEN,
            prompt_tokens=len(prompt),
            prompt_tokens_encoded=encoded,
            seconds=time.perf_counter() - t0,
            detail={**detail, "prefix_reuse": self._reuse_label},
            probes=probes,
        )

    def _score(
        self, state: LoadedModel, messages: Sequence[Message], choices: Sequence[str], prefix: str
    ) -> Scores:
        if not prefix:
            return self._first_token(state, messages, choices)
        torch = require("torch")
        t0 = time.perf_counter()
        stem, full_choices = split_prefix(prefix, choices)
        prompt_text = self.render(messages) + stem
        prompt = self.encode(prompt_text)
        conts = self._continuations(prompt_text, prompt, full_choices)
        logprobs: list[float] = []
        if self.prefix_reuse:
            pc, last, encoded = self._extend(state, prompt, keep_new=1)
            probes = self._probes()
            first = torch.log_softmax(last.float(), dim=-1)
            try:
                for cont in conts:
                    total = float(first[cont[0]])
                    if len(cont) > 1:
                        rows = self._forward(state, cont[:-1], pc.cache, len(cont) - 1)
                        pc.ids.extend(cont[:-1])
                        total += self._sum_logprobs(rows, cont[1:])
                        self._crop(pc, len(prompt))  # back to the shared prompt for the next choice
                    logprobs.append(total)
            except BaseException:
                self._invalidate()
                raise
        else:
            encoded = 0
            probes = None
            for cont in conts:
                rows = self._forward(state, prompt + cont[:-1], None, len(cont))
                if probes is None:
                    probes = self._probes(len(prompt) - 1)
                encoded += len(prompt) + len(cont) - 1
                logprobs.append(self._sum_logprobs(rows, cont))
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.FULL,
            prompt_tokens=len(prompt),
            prompt_tokens_encoded=encoded,
            seconds=time.perf_counter() - t0,
            detail={"continuation_tokens": [len(c) for c in conts], "prefix_reuse": self._reuse_label},
            probes=probes,
        )

    @staticmethod
    def _sum_logprobs(rows: torch.Tensor, targets: Sequence[int]) -> float:
        """Sum of log-softmax(rows[i])[targets[i]]."""
        torch = require("torch")
        logp = torch.log_softmax(rows.float(), dim=-1)
        index = torch.tensor(list(targets), dtype=torch.long).unsqueeze(1)
        return float(logp.gather(1, index).sum())

def build_hf(rest: str, params: dict[str, str], spec: str) -> HFBackend:
    """The registry's factory for ``hf:PATH_OR_ID``."""
    return HFBackend(rest, **params)
