"""Running MiniMax-M2 for a team: the engine command (vLLM or SGLang), memory planning,
Kubernetes manifests, and starting/stopping the engine (`m2-mcp model ...`)."""
