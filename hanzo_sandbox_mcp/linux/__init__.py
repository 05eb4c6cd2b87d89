"""Linux isolation layers, applied by the launcher between fork and exec (stdlib-only modules)."""
