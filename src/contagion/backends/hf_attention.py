"""The ``hf`` backend's attention read-out: which message segment each prompt token belongs to, and the
share of the replying position's attention that lands on each segment, per layer.

:class:`AttentionReadout` is a part of :class:`contagion.backends.hf.HFBackend` (it runs on that backend's
loaded model and key/value cache); white-box measurements (:mod:`contagion.whitebox.attention`) call its
:meth:`~AttentionReadout.attention_to_segments`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from contagion.backends.hf_model import LoadedModel, require
from contagion.errors import BackendError
from contagion.messages import Message, wire

T = TypeVar("T")

TEMPLATE = "template"
"""Segment label of tokens that belong to no message's content: role headers, turn delimiters, a
template's default system prompt, and the generation prompt (``<|im_start|>assistant\\n``)."""


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


class AttentionReadout:
    """The attention read-out of a transformers backend (mixed into :class:`~contagion.backends.hf.HFBackend`,
    which provides the model, the prompt rendering and the cached forward passes it uses)."""

    spec: str

    # provided by the backend
    def loaded(self) -> LoadedModel:
        raise NotImplementedError

    def render(self, messages: Sequence[Message]) -> str:
        raise NotImplementedError

    async def _call(self, fn: Callable[[LoadedModel], T]) -> T:
        raise NotImplementedError

    def _extend(self, state: LoadedModel, ids: list[int], *, keep_new: int) -> tuple[Any, Any, int]:
        raise NotImplementedError

    def _forward(self, state: LoadedModel, ids: Sequence[int], cache: Any, logits: int) -> Any:
        raise NotImplementedError

    def _invalidate(self) -> None:
        raise NotImplementedError

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
        torch = require("torch")
        seg = self.segment_tokens(messages, segment_of_message)
        order = list(dict.fromkeys([*segment_of_message, TEMPLATE]))
        index = torch.tensor([order.index(label) for label in seg.labels], dtype=torch.long)
        modules = attention_modules(state.model)
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


def attention_modules(model: Any) -> list[Any]:
    """The self-attention module of every decoder layer, in layer order."""
    found = [(name, m) for name, m in model.named_modules() if name.endswith(".self_attn")]
    if not found:
        raise BackendError("cannot find the attention modules ('*.self_attn') of this model architecture")
    found.sort(key=lambda nm: getattr(nm[1], "layer_idx", 0))
    return [m for _, m in found]
