"""The M2 agent: model client, M2 wire format, agent loop."""
