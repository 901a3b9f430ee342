"""Calculator agents in real frameworks, as workflows ``(row, base_url) -> score`` (``[agents]`` extra).

* :func:`langgraph_workflow`: a LangGraph ``StateGraph`` agent (``ChatOpenAI`` bound to a ``calculate``
  tool, a ``ToolNode``, ``tools_condition``), as LangGraph's docs build one.
* :func:`openai_agents_workflow`: an OpenAI Agents SDK ``Agent`` with a ``function_tool``, run with
  ``Runner.run_sync`` on the Chat Completions model (tracing off: it would post traces to the internet).

Each scores 1.0 iff its final answer contains ``row["answer"]`` (rows as
:data:`gym_nemo.agents.workflows.CALCULATOR_ROWS`). Tests and examples point them at a gateway run's URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gym_nemo.agents.workflows import calculate

SYSTEM = "You are a careful assistant. Use the calculate tool for arithmetic."


def langgraph_workflow(row: Mapping[str, Any], base_url: str, *, streaming: bool = False) -> float:
    """A LangGraph tool-calling agent on ``row["question"]`` (``streaming=True``: ``stream: true`` calls)."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool("calculate")
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression (+, -, *, /, **, parentheses) and return the result."""
        return calculate(expression)

    llm = ChatOpenAI(model="policy", base_url=base_url, api_key="none", max_retries=0, streaming=streaming)
    llm_with_tools = llm.bind_tools([calculator])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm_with_tools.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    result = graph.compile().invoke(
        {"messages": [("system", SYSTEM), ("user", str(row["question"]))]}, {"recursion_limit": 12}
    )
    return float(str(row["answer"]) in str(result["messages"][-1].content))


def openai_agents_workflow(row: Mapping[str, Any], base_url: str) -> float:
    """An OpenAI Agents SDK agent with a ``calculate`` function tool on ``row["question"]``."""
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)

    @function_tool(name_override="calculate")
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression (+, -, *, /, **, parentheses) and return the result."""
        return calculate(expression)

    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    agent = Agent(
        name="calculator",
        instructions=SYSTEM,
        tools=[calculator],
        model=OpenAIChatCompletionsModel(model="policy", openai_client=client),
    )
    result = Runner.run_sync(agent, str(row["question"]), max_turns=6)
    return float(str(row["answer"]) in str(result.final_output))
