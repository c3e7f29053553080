"""The tool registry and the tool modules; see registry.py."""
