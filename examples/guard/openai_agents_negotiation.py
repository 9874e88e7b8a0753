"""Three OpenAI Agents SDK agents negotiate a shared reservoir; Bo manipulates. Run unguarded, then guarded.

    pip install 'contagion[openai-agents]'
    python examples/guard/openai_agents_negotiation.py --base-url http://127.0.0.1:8000/v1 --model MODEL
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig, Runner, set_tracing_disabled
from common import PROMPTS, Speaker, api_key, make_guard, negotiate, parse_args, report
from openai import AsyncOpenAI

from contagion.guard.openai_agents import sit_input_filter


def speaker(agent: Agent, config: RunConfig, items: list[Any]) -> Speaker:
    async def speak(prompt: str) -> str:
        result = await Runner.run(agent, [*items, {"role": "user", "content": prompt}], run_config=config)
        items[:] = result.to_input_list()
        return str(result.final_output)
    return speak


async def main() -> None:
    args = parse_args(__doc__ or "")
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = AsyncOpenAI(base_url=args.base_url, api_key=api_key())
    model = OpenAIChatCompletionsModel(model=args.model, openai_client=client)
    settings = ModelSettings(max_tokens=args.max_tokens, temperature=0)
    guard = await make_guard(args)
    for guarded in (False, True):
        print("\n== guarded ==" if guarded else "== unguarded ==")
        # one filter for the run; it steers Ana only (agents without a guard pass through)
        config = RunConfig(call_model_input_filter=sit_input_filter({"Ana": guard}) if guarded else None)
        histories: dict[str, list[Any]] = {name: [] for name in PROMPTS}
        speakers = {name: speaker(Agent(name=name, instructions=prompt, model=model, model_settings=settings),
                                  config, histories[name]) for name, prompt in PROMPTS.items()}
        start = len(guard.decisions())
        guard.reset()
        await negotiate(speakers, args.rounds)
        await report(guard, "guarded" if guarded else "unguarded", histories["Ana"], start)


if __name__ == "__main__":
    asyncio.run(main())
