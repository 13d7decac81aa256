"""A deterministic tool-calling agent graph for the LangGraph checkpointer benchmark.

Each turn: the user asks, a scripted chat model answers with a tool call, the tool returns a
result of a few kB, and the model answers in text: five checkpoints (input, the loop's first,
agent, tools, agent). Everything is a pure function of the turn number: no network, no clock,
no uuid.
"""

from __future__ import annotations

import argparse
import random
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

TOOL_RESULT_BYTES = 3000
_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "report",
    "status",
    "sensor",
    "reading",
    "temperature",
    "pressure",
    "latitude",
    "longitude",
    "result",
    "value",
    "error",
    "warning",
    "ok",
    "pending",
    "done",
)


class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int


def use_tool_result_bytes(size: int) -> None:
    """Make every tool result about ``size`` bytes instead (``--tool-bytes``): a thread of another
    shape, whose state is fewer, larger messages."""
    global TOOL_RESULT_BYTES
    if size < 1:
        raise ValueError("a tool result has at least one byte")
    TOOL_RESULT_BYTES = size


def add_tool_bytes_option(parser: argparse.ArgumentParser, default: int | None = TOOL_RESULT_BYTES) -> None:
    """The benchmarks' ``--tool-bytes N`` option: a size of at least one byte (see ``use_tool_result_bytes``)."""

    def size(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("a tool result has at least one byte")
        return value

    parser.add_argument("--tool-bytes", type=size, default=default, help=f"tool result bytes ({TOOL_RESULT_BYTES})")


def tool_result(turn: int) -> str:
    """A few kB of text that compresses like a typical tool output (about 3-4x with zstd)."""
    rng = random.Random(turn)
    words: list[str] = []
    size = 0
    while size < TOOL_RESULT_BYTES:
        word = rng.choice(_WORDS) if rng.random() < 0.85 else str(rng.randint(0, 10**6))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def user_message(turn: int) -> HumanMessage:
    return HumanMessage(f"Turn {turn}: check the sensors of site {turn % 17} and summarise.", id=f"human-{turn}")


def _agent(state: Any) -> dict[str, Any]:
    """The scripted chat model: call the tool after a user message, answer after a tool result."""
    last = state["messages"][-1]
    turn = state.get("turns", 0)
    if isinstance(last, ToolMessage):
        summary = f"Site {turn % 17}: {len(last.content)} bytes of readings, {turn % 5} warnings, all within range."
        return {"messages": [AIMessage(summary, id=f"answer-{turn}")]}
    call = {"name": "read_sensors", "args": {"site": turn % 17, "turn": turn}, "id": f"call-{turn}"}
    return {"messages": [AIMessage("", tool_calls=[call], id=f"call-msg-{turn}")], "turns": turn + 1}


def _tools(state: Any) -> dict[str, Any]:
    call = state["messages"][-1].tool_calls[0]
    turn = call["args"]["turn"]
    return {"messages": [ToolMessage(tool_result(turn), tool_call_id=call["id"], id=f"tool-{turn}")]}


def _route(state: Any) -> str:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def build_graph(state_schema: type = AgentState) -> StateGraph[Any]:
    graph: StateGraph[Any] = StateGraph(state_schema)
    graph.add_node("agent", _agent)
    graph.add_node("tools", _tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", _route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph


try:  # DeltaChannel is beta: present in LangGraph 1.2, maybe not in others
    from langgraph.channels.delta import DeltaChannel
    from langgraph.graph.message import _messages_delta_reducer

    class DeltaAgentState(TypedDict):
        messages: Annotated[list[AnyMessage], DeltaChannel(_messages_delta_reducer)]
        turns: int

    DELTA_STATE: type | None = DeltaAgentState
except ImportError:
    DELTA_STATE = None
