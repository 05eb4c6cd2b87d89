"""The MCP server: tools over `SandboxService` (app.py), the HTTP guard and transports (http.py), `serve()`."""

from .app import FILES_URI_TEMPLATE, build_server
from .serve import Transport, serve, serve_async

__all__ = ["FILES_URI_TEMPLATE", "Transport", "build_server", "serve", "serve_async"]
