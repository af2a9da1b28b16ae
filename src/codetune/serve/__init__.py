"""`codetune serve`: an OpenAI-compatible (and TGI / llm-ls) completion server.

app.py holds the routes, auth and the ASGI guard; engine.py admission and the generation and
tokenizer threads; limits.py request validation (the settings are config.py's `serve` section);
editors.py the editor configs; upstream.py the gateway mode (`serve --upstream`: generation on
vLLM / TGI / llama.cpp)."""

from codetune.serve.app import BackgroundServer, create_app, fim_info, serve
from codetune.serve.limits import ServeSettings, is_loopback, max_chars_per_token
from codetune.serve.upstream import Upstream, load_front

__all__ = ["BackgroundServer", "ServeSettings", "Upstream", "create_app", "fim_info",
           "is_loopback", "load_front", "max_chars_per_token", "serve"]
