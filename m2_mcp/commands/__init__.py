"""One module per CLI command: HELP, add_arguments(parser), run(args) -> exit code.

Keep heavy imports inside run() so `m2-mcp --help` stays fast.
"""
