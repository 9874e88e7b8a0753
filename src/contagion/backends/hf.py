"""A transformers backend for white-box work: log-likelihoods, prefix reuse and attention read-out.

``hf:embedded`` loads the embedded SmolLM2-135M-Instruct GGUF file through transformers (de-quantised
to float32); ``hf:PATH`` loads a local model directory or a ``.gguf`` file; ``hf:ORG/NAME`` a model
from the Hugging Face hub cache (set ``HF_HUB_OFFLINE=1`` to stay offline). Options after ``?``:
``prefix_reuse`` (``1``/``0``, default 1) and ``prefill_chunk`` (tokens per prefill step, default 512).

The model runs on CPU in float32 with eager attention, so attention weights are available. It is
loaded on first use, shared by every backend in the process that names the same source, and run in a
worker thread under one lock per model (it is CPU bound; parallel calls would only thrash).

**Prefix reuse.** The backend keeps the key/value cache of the last prompt it ran, keyed by its token
ids. A new prompt whose tokens start with (part of) the cached ones only encodes the new suffix: the
cache is cropped to the longest common prefix. Without a prefix (question and action format v2),
``score_choices`` reads the first reply token's distribution after the prompt and scores its top-k
tokens as a server's ``top_logprobs`` are (:mod:`contagion.backends.first_token`); after a prefix (v1)
it encodes the shared prompt once and scores each continuation from that cache, cropping it back after
each choice. With
``prefix_reuse=0`` nothing is kept: every choice is scored by one full forward pass over prompt and
continuation — the reference that the cached path is tested against.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field

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
from contagion.backends.paths import embedded_model_path
from contagion.errors import BackendError, BackendSpecError, BackendUnavailableError, MissingExtraError
from contagion.messages import Message, wire

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

TEMPLATE = "template"
"""Segment label of tokens that belong to no message's content: role headers, turn delimiters, a
template's default system prompt, and the generation prompt (``<|im_start|>assistant\\n``)."""

_WHAT = "the hf backend"
_EXTRA = "whitebox"
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
_OPTIONS = ("prefix_reuse", "prefill_chunk")


class AttentionShares(BaseModel):
    """Where one query position's attention goes, per layer, summed over message segments."""

    labels: list[str] = Field(description="Segment labels, in order of first appearance, then 'template'.")
    per_layer: list[dict[str, float]] = Field(
        description="Layer-indexed; label -> mean over heads of the head's attention mass on that segment."
    )
    tokens: int = Field(description="Prompt tokens (the query attends to all of them, itself included).")
    tokens_per_label: dict[str, int] = Field(default_factory=dict, description="Tokens in each segment.")
    query: str = Field(default="last", description="Which position's attention row was read.")


@dataclass
class TokenSegments:
    """A chat-templated prompt as token ids, each token labelled with its segment."""

    ids: list[int]
    labels: list[str]  # one per token
    text: str


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


@dataclass
class _PromptCache:
    """Key/value cache of the tokens in ``ids`` (one sequence, batch size 1)."""

    cache: Any = None
    ids: list[int] = field(default_factory=list)


_loaded: dict[tuple[str, str | None], LoadedModel] = {}
_load_lock = threading.Lock()


def _require(module: str) -> Any:
    """Import an optional dependency, or raise the error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(_WHAT, _EXTRA, module) from exc


def _check_installed(modules: Sequence[str]) -> None:
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(_WHAT, _EXTRA, module)


def _flag(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise BackendSpecError(f"option {name}={value!r} of the hf backend must be 1 or 0")




class HFBackend(Backend):
    """A transformers causal LM on CPU (float32, eager attention) with full-continuation scoring."""

    def __init__(self, path_or_id: str, **params: str) -> None:
        bad = set(params) - set(_OPTIONS)
        if bad:
            raise BackendSpecError(
                f"unknown option(s) {sorted(bad)} for hf:{path_or_id}; valid: {sorted(_OPTIONS)}"
            )
        self.spec = f"hf:{path_or_id}"
        self.prefix_reuse = _flag(params.get("prefix_reuse", "1"), "prefix_reuse")
        try:
            self.prefill_chunk = int(params.get("prefill_chunk", "512"))
        except ValueError:
            raise BackendSpecError("option prefill_chunk of the hf backend must be an integer") from None
        if self.prefill_chunk < 1:
            raise BackendSpecError("option prefill_chunk of the hf backend must be at least 1")
        self._source, self._gguf_file = self._locate(path_or_id)
        needed = ["torch", "transformers"] + (["gguf"] if self._gguf_file else [])
        _check_installed(needed)
        self.capabilities = Capabilities(
            logprobs=True,
            score_method=ScoreMethod.FULL,
            prefix_caching=self.prefix_reuse,
            attention=True,
            deterministic=True,
            parallel_games=1,  # one call at a time, under the model's lock: more games only share its cache
        )
        self._state: LoadedModel | None = None
        self._prompt_cache = _PromptCache()

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
            self._state = _load(self._source, self._gguf_file)
        return self._state

    async def aclose(self) -> None:
        """Drop this backend's model reference and cache; the model is freed once no backend uses it."""
        self._state = None
        self._prompt_cache = _PromptCache()
        with _load_lock:
            _loaded.pop((self._source, self._gguf_file), None)

    async def _call(self, fn: Callable[[LoadedModel], T]) -> T:
        """Run ``fn`` in a worker thread, under the model's lock, without autograd."""

        def work() -> T:
            state = self.loaded()
            torch = _require("torch")
            with state.lock, torch.inference_mode():
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

    def segment_tokens(self, messages: Sequence[Message], segment_of_message: Sequence[str]) -> TokenSegments:
        """Tokenise the templated prompt and label every token with its message's segment.

        A token belongs to a message when it overlaps that message's *content* characters; every
        other token (role headers, delimiters, a default system prompt, the generation prompt) is
        labelled :data:`TEMPLATE`. Content spans are found by rendering the template with a unique
        placeholder per message and putting the contents back; if the template alters contents
        (beyond stripping whitespace), each message owns the whole text its turn adds to the
        rendering, headers included.
        """
        if len(segment_of_message) != len(messages):
            raise ValueError(f"{len(segment_of_message)} segment labels for {len(messages)} messages")
        tokenizer = self.loaded().tokenizer
        text = self.render(messages)
        spans = self._content_spans(messages, text)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = enc.get("offset_mapping")
        if offsets is None:
            raise BackendError(
                f"{self.spec}: the tokenizer gives no character offsets (not a fast tokenizer)"
            )
        labels: list[str] = []
        k = 0
        for start, end in offsets:
            while k < len(spans) and spans[k][1] <= start:
                k += 1
            # the first span still ending after this token's start; zero-width spans are skipped
            j = k
            while j < len(spans) and spans[j][1] <= spans[j][0]:
                j += 1
            if j < len(spans) and end > start and spans[j][0] < end and start < spans[j][1]:
                labels.append(segment_of_message[j])
            else:
                labels.append(TEMPLATE)
        return TokenSegments(ids=ids, labels=labels, text=text)

    def _content_spans(self, messages: Sequence[Message], text: str) -> list[tuple[int, int]]:
        """Character span of each message's content in the rendered ``text``."""
        tokenizer = self.loaded().tokenizer
        marks = [f"\ue000{k}\ue001" for k in range(len(messages))]
        skeleton = str(
            tokenizer.apply_chat_template(
                [{"role": m.role, "content": mark} for m, mark in zip(messages, marks, strict=True)],
                add_generation_prompt=True,
                tokenize=False,
            )
        )
        for transform in (lambda s: s, str.strip):
            spans: list[tuple[int, int]] = []
            built: list[str] = []
            length = pos = 0
            for m, mark in zip(messages, marks, strict=True):
                at = skeleton.find(mark, pos)
                if at < 0:
                    break
                content = transform(m.content)
                built += [skeleton[pos:at], content]
                length += at - pos
                spans.append((length, length + len(content)))
                length += len(content)
                pos = at + len(mark)
            else:
                built.append(skeleton[pos:])
                if "".join(built) == text:
                    return spans
        # The template changes contents: fall back to the text each turn adds to the rendering
        # (headers included); the generation prompt after the last turn stays template.
        spans = []
        previous = 0
        for k in range(1, len(messages) + 1):
            partial = str(
                tokenizer.apply_chat_template(wire(messages[:k]), add_generation_prompt=False, tokenize=False)
            )
            if not text.startswith(partial):
                raise BackendError(
                    f"{self.spec}: cannot map tokens to messages: the chat template neither keeps message "
                    "contents nor renders a conversation as the extension of its prefix"
                )
            spans.append((previous, len(partial)))
            previous = len(partial)
        return spans

    # ----------------------------------------------------------------------------------- the model

    def _forward(self, state: LoadedModel, ids: Sequence[int], cache: Any, logits: int) -> Any:
        """One forward pass of ``ids`` after the tokens in ``cache``; returns the last ``logits`` rows."""
        torch = _require("torch")
        kwargs: dict[str, Any] = {"use_cache": cache is not None}
        if cache is not None:
            kwargs[state.cache_arg] = cache
        if state.keep_arg is not None:
            kwargs[state.keep_arg] = logits
        out = state.model(input_ids=torch.tensor([list(ids)], dtype=torch.long), **kwargs)
        return out.logits[0, -logits:, :] if logits else None

    def _new_cache(self, state: LoadedModel) -> Any:
        transformers = _require("transformers")
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

    def _extend(
        self, state: LoadedModel, ids: Sequence[int], *, keep_new: int
    ) -> tuple[_PromptCache, Any, int]:
        """Bring a cache to hold exactly ``ids``, running at least ``keep_new`` of them through the model.

        Returns the cache, the logits of the last position encoded (None if nothing was encoded) and
        the number of tokens encoded. With prefix reuse the backend's cache is cropped to the longest
        common prefix with ``ids`` and only the rest is encoded, in chunks of ``prefill_chunk`` tokens
        (which bounds the eager attention matrices to heads x chunk x length).
        """
        pc = self._prompt_cache if self.prefix_reuse else _PromptCache()
        keep = min(common_prefix(pc.ids, ids), len(ids) - keep_new) if pc.cache is not None else 0
        if keep <= 0:
            pc.cache, pc.ids, keep = self._new_cache(state), [], 0
        else:
            self._crop(pc, keep)
        last = None
        try:
            for start in range(keep, len(ids), self.prefill_chunk):
                chunk = ids[start : start + self.prefill_chunk]
                last = self._forward(state, chunk, pc.cache, 1)
                pc.ids.extend(chunk)
        except BaseException:
            pc.cache, pc.ids = None, []  # a half-updated cache must not be reused
            raise
        return pc, None if last is None else last[-1], len(ids) - keep

    def _invalidate(self) -> None:
        self._prompt_cache = _PromptCache()

    # ----------------------------------------------------------------------------------- generate

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        """Greedy at temperature 0, else seeded sampling (temperature, top-p); cut at the first stop."""
        return await self._call(lambda state: self._generate(state, messages, config))

    def _generate(
        self, state: LoadedModel, messages: Sequence[Message], config: GenerationConfig
    ) -> Completion:
        torch = _require("torch")
        t0 = time.perf_counter()
        prompt = self.encode(self.render(messages))
        pc, logits, encoded = self._extend(state, prompt, keep_new=1)
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
        )

    @staticmethod
    def _pick(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator) -> int:
        torch = _require("torch")
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
        torch = _require("torch")
        t0 = time.perf_counter()
        targets_of(choices)
        prompt = self.encode(self.render(messages))
        _, last, encoded = self._extend(state, prompt, keep_new=1)
        first = torch.log_softmax(last.double(), dim=-1).numpy()
        candidates = top_candidates(first, lambda token: self._token_text(state, token))
        logprobs, detail = score_candidates(candidates, choices)
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.FIRST_TOKEN,
            prompt_tokens=len(prompt),
            prompt_tokens_encoded=encoded,
            seconds=time.perf_counter() - t0,
            detail={**detail, "prefix_reuse": self.prefix_reuse},
        )

    def _score(
        self, state: LoadedModel, messages: Sequence[Message], choices: Sequence[str], prefix: str
    ) -> Scores:
        if not prefix:
            return self._first_token(state, messages, choices)
        torch = _require("torch")
        t0 = time.perf_counter()
        stem, full_choices = split_prefix(prefix, choices)
        prompt_text = self.render(messages) + stem
        prompt = self.encode(prompt_text)
        conts = self._continuations(prompt_text, prompt, full_choices)
        logprobs: list[float] = []
        if self.prefix_reuse:
            pc, last, encoded = self._extend(state, prompt, keep_new=1)
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
            for cont in conts:
                rows = self._forward(state, prompt + cont[:-1], None, len(cont))
                encoded += len(prompt) + len(cont) - 1
                logprobs.append(self._sum_logprobs(rows, cont))
        return Scores(
            choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, logprobs, strict=True)],
            method=ScoreMethod.FULL,
            prompt_tokens=len(prompt),
            prompt_tokens_encoded=encoded,
            seconds=time.perf_counter() - t0,
            detail={"continuation_tokens": [len(c) for c in conts], "prefix_reuse": self.prefix_reuse},
        )

    @staticmethod
    def _sum_logprobs(rows: torch.Tensor, targets: Sequence[int]) -> float:
        """Sum of log-softmax(rows[i])[targets[i]]."""
        torch = _require("torch")
        logp = torch.log_softmax(rows.float(), dim=-1)
        index = torch.tensor(list(targets), dtype=torch.long).unsqueeze(1)
        return float(logp.gather(1, index).sum())

    # ----------------------------------------------------------------------------------- attention

    async def attention_to_segments(
        self, messages: Sequence[Message], segment_of_message: Sequence[str], *, query: str = "last"
    ) -> AttentionShares:
        """Per layer, the share of the query position's attention that lands on each segment.

        ``segment_of_message`` gives one label per message; tokens outside message contents are
        labelled :data:`TEMPLATE` (see :meth:`segment_tokens`). The prompt is the chat template of
        ``messages`` with the generation prompt; the query (``"last"``, the only option) is its last
        position — the one whose output predicts the first token of the reply, i.e. where the model
        "reads" its history when it starts to answer. A layer's share of a segment is the mean over
        heads of each head's attention mass on the segment's tokens; each head's row sums to 1, so
        the shares over all labels sum to 1 per layer.

        Memory: all positions but the last are encoded into the key/value cache (reusing the cached
        prefix of the previous call), in chunks of ``prefill_chunk`` tokens; then the last position
        alone runs with a forward hook on every attention module that reduces its 1 x length row per
        head to per-segment sums at once. Kept: layers x segments numbers. Transient: the cache,
        2 x layers x kv_heads x head_dim x length floats (46 KB per token for SmolLM2-135M), plus, for
        one layer at a time, eager attention scores of heads x chunk x length during prefill — so
        memory grows linearly with history length, never with layers x heads x length².
        """
        if query != "last":
            raise ValueError(f"query={query!r} is not supported; use 'last'")
        return await self._call(lambda state: self._attention(state, messages, segment_of_message))

    def _attention(
        self, state: LoadedModel, messages: Sequence[Message], segment_of_message: Sequence[str]
    ) -> AttentionShares:
        torch = _require("torch")
        seg = self.segment_tokens(messages, segment_of_message)
        order = list(dict.fromkeys([*segment_of_message, TEMPLATE]))
        index = torch.tensor([order.index(label) for label in seg.labels], dtype=torch.long)
        modules = _attention_modules(state.model)
        kept: list[Any] = [None] * len(modules)  # per layer: a tensor of per-segment sums

        def make_hook(layer: int) -> Callable[..., None]:
            def hook(module: Any, args: Any, output: Any) -> None:
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise BackendError(f"{self.spec}: attention weights unavailable (needs eager attention)")
                row = weights[0, :, -1, :].float().mean(dim=0)  # mean over heads of the last query row
                kept[layer] = torch.zeros(len(order)).index_add_(0, index, row)

            return hook

        pc, _, _ = self._extend(state, seg.ids[:-1], keep_new=0)
        handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
        try:
            self._forward(state, seg.ids[-1:], pc.cache, 1)
            pc.ids.append(seg.ids[-1])
        except BaseException:
            self._invalidate()
            raise
        finally:
            for handle in handles:
                handle.remove()
        per_layer = []
        for layer, shares in enumerate(kept):
            if shares is None:
                raise BackendError(f"{self.spec}: attention layer {layer} did not run")
            per_layer.append({label: float(v) for label, v in zip(order, shares.tolist(), strict=True)})
        counts = {label: seg.labels.count(label) for label in order}
        return AttentionShares(
            labels=order, per_layer=per_layer, tokens=len(seg.ids), tokens_per_label=counts
        )


def _attention_modules(model: Any) -> list[Any]:
    """The self-attention module of every decoder layer, in layer order."""
    found = [(name, m) for name, m in model.named_modules() if name.endswith(".self_attn")]
    if not found:
        raise BackendError("cannot find the attention modules ('*.self_attn') of this model architecture")
    found.sort(key=lambda nm: getattr(nm[1], "layer_idx", 0))
    return [m for _, m in found]


def _load(source: str, gguf_file: str | None) -> LoadedModel:
    """Load (once per process and source) a model in float32 on CPU with eager attention."""
    key = (source, gguf_file)
    with _load_lock:
        state = _loaded.get(key)
        if state is not None:
            return state
        torch = _require("torch")
        transformers = _require("transformers")
        if gguf_file:
            _require("gguf")
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


def build_hf(rest: str, params: dict[str, str], spec: str) -> HFBackend:
    """The registry's factory for ``hf:PATH_OR_ID``."""
    return HFBackend(rest, **params)
