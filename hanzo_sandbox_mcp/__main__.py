"""`python -m hanzo_sandbox_mcp` runs the command line."""

from .cli import main

raise SystemExit(main())
