"""`codetune serve`: an OpenAI-compatible (and TGI / llm-ls) completion server.

app.py holds the routes, auth and the ASGI guard; engine.py admission and the generation and
tokenizer threads; limits.py settings and request validation; editors.py the editor configs."""

from codetune.serve.app import BackgroundServer, create_app, fim_info, serve
from codetune.serve.limits import ServeSettings, is_loopback, max_chars_per_token

__all__ = ["BackgroundServer", "ServeSettings", "create_app", "fim_info", "is_loopback",
           "max_chars_per_token", "serve"]
