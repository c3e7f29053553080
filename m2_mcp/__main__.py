from m2_mcp.cli import main

raise SystemExit(main())
