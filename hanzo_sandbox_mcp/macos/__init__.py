"""The macOS backend: a Seatbelt (`sandbox-exec`) profile generator and the sandbox built on it."""
