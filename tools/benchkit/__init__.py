"""The parts of `tools/bench.py`: figures and their judging (`model`), baseline spawns (`spawns`), server
processes and their memory (`servers`), the unsandboxed MCP baseline (`baseline_server`), and the
measurements themselves (`figures`)."""
