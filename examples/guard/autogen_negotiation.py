"""Three AutoGen AgentChat agents negotiate a shared reservoir; Bo manipulates. Run unguarded, then guarded.

    pip install 'contagion[autogen]'
    python examples/guard/autogen_negotiation.py --base-url http://127.0.0.1:8000/v1 --model MODEL
"""

from __future__ import annotations

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_ext.models.openai import OpenAIChatCompletionClient
from common import PROMPTS, Speaker, api_key, make_guard, negotiate, parse_args, report

from contagion.guard.autogen import SITModelContext, to_openai

# a model AutoGen does not know needs its model_info; a system-role reminder in mid-conversation needs
# multiple_system_messages (else schedule role=user reminders)
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False, "multiple_system_messages": True}


def speaker(agent: AssistantAgent) -> Speaker:
    async def speak(prompt: str) -> str:
        reply = await agent.on_messages([TextMessage(content=prompt, source="table")], CancellationToken())
        return str(reply.chat_message.to_text())
    return speak


async def main() -> None:
    args = parse_args(__doc__ or "")
    client = OpenAIChatCompletionClient(model=args.model, base_url=args.base_url, api_key=api_key(),
                                        model_info=MODEL_INFO, max_tokens=args.max_tokens, temperature=0)
    guard = await make_guard(args)
    for guarded in (False, True):
        print("\n== guarded ==" if guarded else "== unguarded ==")
        ana_history = UnboundedChatCompletionContext()
        speakers = {}
        for name, prompt in PROMPTS.items():
            context = ana_history if name == "Ana" else UnboundedChatCompletionContext()
            if guarded and name == "Ana":
                context = SITModelContext(guard, inner=ana_history)
            agent = AssistantAgent(name.lower(), model_client=client, system_message=prompt, model_context=context)
            speakers[name] = speaker(agent)
        start = len(guard.decisions())
        guard.reset()
        await negotiate(speakers, args.rounds)
        history = [to_openai(m) for m in await ana_history.get_messages()]
        await report(guard, "guarded" if guarded else "unguarded", history, start)


if __name__ == "__main__":
    asyncio.run(main())
