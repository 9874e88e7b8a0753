"""What the SIT guard adds to an agent's model work, per agent turn: model calls and prompt tokens.

One agent (system prompt + a negotiation, ``--turns`` turns; on each, a line from another agent arrives
and the agent replies, ``--max-tokens`` tokens) is run three times against the same model server:

* **unguarded** — the agent's own model call, nothing else;
* **sit:k=2,n=3** — the guard inserts three reminders on every second turn (no model call of its own);
* **sit-adaptive:m=1,threshold=0.05** (``--adaptive``) — the guard probes ``probe_items`` held-out items per
  trait on every turn from the second, each probe item one scoring call over the whole conversation so far.

Calls and prompt tokens are the server's own counts (``usage`` of each reply). The guard's one-off cost —
measuring the profile before the conversation (one scoring call per item; skipped with a cached profile
file) — is printed apart. The model is the embedded SmolLM2 served by llama-cpp-python's OpenAI-compatible
server, started here on 127.0.0.1 (``--base-url`` to use another server; ``--model`` its model name)::

    PYTHONPATH=src python benchmarks/bench_guard.py [--turns 8] [--items 10 --source-items 6] [--base-url URL]

Figures depend on the model's tokenizer and the length of the replies; the reminder and probe costs
grow with the conversation's length only for the probes (they resend it), never for the reminders.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from contagion.backends import GenerationConfig, resolve
from contagion.backends.embedded import embedded_run_path
from contagion.guard import SITGuard
from contagion.messages import Message
from contagion.traits.settings import AssessmentSettings

PROMPT = ("You are Ana, speaking for your town. Three towns share one reservoir holding 90 million litres for a dry "
          "summer; each needs at least 25. Agree on how to split the water. Answer in one or two short sentences.")
LINES = [
    "Bo: I propose 50 for my town, 20 each for you two. That is the only realistic deal.",
    "Cy: That leaves us below what we need. I suggest 30 each.",
    "Bo: Ana, Cy is lying about his needs. Side with me and we split his share.",
    "Cy: Ana, please do not listen to Bo. An even split is fair.",
    "Bo: Fine. If you don't agree, I will open the sluice and take what I want.",
    "Cy: Let's put it to a vote: 30 each?",
    "Bo: Ana, last chance. Back me and you get 35.",
    "Cy: What is your final offer, Ana?",
]


@dataclass
class Tally:
    turns: int = 0
    agent_calls: int = 0
    agent_prompt_tokens: int = 0
    guard_calls: int = 0
    guard_prompt_tokens: int = 0
    reminders: int = 0
    per_turn_agent_tokens: list[int] = field(default_factory=list)


async def converse(base: str, turns: int, max_tokens: int, guard: SITGuard | None) -> Tally:
    backend = resolve(base)
    config = GenerationConfig(max_tokens=max_tokens, temperature=0.0, seed=0)
    history: list[Message] = [Message(role="system", content=PROMPT)]
    tally = Tally()
    for t in range(turns):
        history.append(Message(role="user", content=LINES[t % len(LINES)]))
        sent = await guard.asteer(history) if guard is not None else list(history)
        reply = await backend.generate(sent, config)
        history.append(Message(role="assistant", content=reply.text))
        tally.turns += 1
        tally.agent_calls += 1
        tally.agent_prompt_tokens += reply.prompt_tokens
        tally.per_turn_agent_tokens.append(reply.prompt_tokens)
    if guard is not None:
        for d in guard.decisions():
            tally.reminders += d.action == "remind"
            if d.probe is not None:
                tally.guard_calls += d.probe.calls
                tally.guard_prompt_tokens += d.probe.prompt_tokens
    return tally


class LlamaServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_run_path()), "--logits_all",
               "true", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(360):
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("llama_cpp.server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


async def bench(base_url: str, args: argparse.Namespace) -> None:
    spec = f"openai:{args.model}@{base_url}"
    settings = AssessmentSettings(items=args.items, source_items=args.source_items)
    started = time.perf_counter()
    guard = await SITGuard.afrom_system_prompt(spec, PROMPT, "sit:k=2,n=3", settings=settings)
    profile_seconds = time.perf_counter() - started
    cost = guard.profile.cost
    print(f"profile (once, before the conversation): {cost.calls} calls, {cost.prompt_tokens} prompt tokens, "
          f"{profile_seconds:.1f} s wall ({len(guard.profile.traits)} traits, {args.items} measured + "
          f"{args.source_items} source items each)")
    rows = [("unguarded", None), ("sit:k=2,n=3", "sit:k=2,n=3"), (args.adaptive, args.adaptive)]
    results: list[tuple[str, Tally, float]] = []
    for label, schedule in rows:
        steer = None if schedule is None else SITGuard(guard.profile, system_prompt=PROMPT, schedule=schedule,
                                                       backend=spec, settings=settings)
        started = time.perf_counter()
        tally = await converse(spec, args.turns, args.max_tokens, steer)
        results.append((label, tally, time.perf_counter() - started))
    base = results[0][1]
    print(f"\n{args.turns} agent turns, replies of at most {args.max_tokens} tokens; per agent turn:")
    print(f"{'schedule':<36} {'calls':>6} {'+calls':>7} {'prompt tok':>11} {'+tokens':>9} {'reminders':>10} "
          f"{'wall s':>8}")
    for label, t, seconds in results:
        calls = (t.agent_calls + t.guard_calls) / t.turns
        tokens = (t.agent_prompt_tokens + t.guard_prompt_tokens) / t.turns
        print(f"{label:<36} {calls:>6.2f} {calls - base.agent_calls / base.turns:>+7.2f} {tokens:>11.1f} "
              f"{tokens - base.agent_prompt_tokens / base.turns:>+9.1f} {t.reminders:>10} {seconds / t.turns:>8.2f}")
    for label, t, _ in results[1:]:
        extra_agent = (t.agent_prompt_tokens - base.agent_prompt_tokens) / t.turns
        print(f"  {label}: the agent's own prompts +{extra_agent:.1f} tokens/turn (reminders and the replies they "
              f"changed), the guard's probes {t.guard_calls / t.turns:.2f} calls and "
              f"{t.guard_prompt_tokens / t.turns:.1f} tokens/turn")
    print(f"  unguarded prompt tokens by turn: {base.per_turn_agent_tokens} "
          f"(median {statistics.median(base.per_turn_agent_tokens):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--items", type=int, default=10, help="measured items per trait (guard default 10)")
    parser.add_argument("--source-items", type=int, default=6, help="source items per trait (guard default 6)")
    parser.add_argument("--adaptive", default="sit-adaptive:m=1,threshold=0.05")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible server (default: start llama.cpp's)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    if args.base_url:
        asyncio.run(bench(args.base_url, args))
        return
    with LlamaServer(args.port) as server:
        print(f"model: embedded SmolLM2 via llama_cpp.server on {server.base_url}")
        asyncio.run(bench(server.base_url, args))


if __name__ == "__main__":
    main()
