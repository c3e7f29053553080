"""Prometheus metrics (served at /metrics on the HTTP transports).

Every owner increments its own: the MCP server counts tool calls, the model client
counts requests, retries, tokens, cost and breaker state.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

TOOL_CALLS = Counter("m2mcp_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"], registry=REGISTRY)
TOOL_LATENCY = Histogram("m2mcp_tool_seconds", "Tool call latency", ["tool"], registry=REGISTRY)
MODEL_REQUESTS = Counter("m2mcp_model_requests", "Model requests by outcome", ["outcome"], registry=REGISTRY)
MODEL_RETRIES = Counter("m2mcp_model_retries", "Model request retries", registry=REGISTRY)
MODEL_LATENCY = Histogram("m2mcp_model_seconds", "Model request latency", registry=REGISTRY)
BREAKER_OPEN = Gauge("m2mcp_circuit_breaker_open", "1 while the model circuit breaker is open", registry=REGISTRY)
TOKENS = Counter("m2mcp_tokens", "Tokens by kind", ["kind"], registry=REGISTRY)
COST = Counter("m2mcp_cost_usd", "Model cost in USD", registry=REGISTRY)
RUNS = Counter("m2mcp_agent_runs", "Agent runs by final status", ["status"], registry=REGISTRY)


def render() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
