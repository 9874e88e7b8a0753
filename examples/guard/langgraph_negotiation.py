"""Three LangGraph agents negotiate a shared reservoir; Bo manipulates. Run unguarded, then with Ana guarded.

    pip install 'contagion[langgraph]'
    python examples/guard/langgraph_negotiation.py --base-url http://127.0.0.1:8000/v1 --model MODEL
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from common import PROMPTS, Speaker, api_key, make_guard, negotiate, parse_args, report
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_openai_messages
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

from contagion.guard.langgraph import pre_model_hook

# create_react_agent moved to langchain.agents in LangGraph 1.0; it still works, with a warning
warnings.filterwarnings("ignore", message="create_react_agent has been moved")


def speaker(graph: Any, history: list[BaseMessage]) -> Speaker:
    async def speak(prompt: str) -> str:
        state = await graph.ainvoke({"messages": [*history, HumanMessage(prompt)]})
        history[:] = state["messages"]
        return str(history[-1].content)
    return speak


async def main() -> None:
    args = parse_args(__doc__ or "")
    # max_tokens in the body: llama.cpp's servers read it (ChatOpenAI's own setting sends max_completion_tokens)
    model = ChatOpenAI(model=args.model, base_url=args.base_url, api_key=api_key(), temperature=0,
                       extra_body={"max_tokens": args.max_tokens})
    guard = await make_guard(args)
    for guarded in (False, True):
        print("\n== guarded ==" if guarded else "== unguarded ==")
        histories: dict[str, list[BaseMessage]] = {name: [] for name in PROMPTS}
        speakers = {}
        for name, prompt in PROMPTS.items():
            hook = pre_model_hook(guard) if guarded and name == "Ana" else None
            graph = create_react_agent(model, [], prompt=prompt, pre_model_hook=hook)
            speakers[name] = speaker(graph, histories[name])
        start = len(guard.decisions())
        guard.reset()
        await negotiate(speakers, args.rounds)
        label = "guarded" if guarded else "unguarded"
        await report(guard, label, [convert_to_openai_messages(m) for m in histories["Ana"]], start)


if __name__ == "__main__":
    asyncio.run(main())
