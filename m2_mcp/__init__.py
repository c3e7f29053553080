"""m2-mcp: an MCP server and coding agent for MiniMax-M2."""

__version__ = "0.1.0"
