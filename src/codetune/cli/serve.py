"""Subcommands: serve and editor-config."""

from __future__ import annotations

import argparse
import os

from codetune.cli.common import build_config, config_args, config_flag
from codetune.cli.complete import add_model_args, load_target, resolve_target
from codetune.config import API_KEY_ENV, ServeConfig
from codetune.errors import CodetuneError

# --slots with --upstream: requests in flight to the engine, which batches them
UPSTREAM_SLOTS = 64


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="an OpenAI-compatible (and TGI/llm-ls) completion server for editors",
        description="Serve a run folder (base + adapter), a merged model or a base model over "
                    "HTTP: POST /v1/completions (OpenAI, with suffix = FIM, streaming), POST "
                    "/generate (TGI, llm-vscode), POST /infill (llama.cpp, llama.vscode), GET "
                    "/v1/models, GET /health. FIM prompts get repository context: snippets of "
                    "other files, from the run's dataset index or --context PATH.")
    add_model_args(p)
    d = ServeConfig()  # the `serve` section of the config: defaults, help and checks
    config_flag(p, "--host", "serve.host")
    config_flag(p, "--port", "serve.port")
    config_flag(p, "--api-key", "serve.api_key",
                help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; prefer the "
                     "variable: flags show in `ps`)")
    config_flag(p, "--model-name", "serve.model_name",
                help="the model id clients send and see (default: TARGET's folder name)")
    config_flag(p, "--slots", "serve.slots",
                help=f"requests generating at once (default: {d.slots}; with --upstream: "
                     f"{UPSTREAM_SLOTS} requests in flight upstream)")
    config_flag(p, "--queue", "serve.queue")
    config_flag(p, "--max-prompt-tokens", "serve.max_prompt_tokens")
    config_flag(p, "--max-tokens", "serve.max_tokens")
    config_flag(p, "--max-body-bytes", "serve.max_body_bytes")
    config_flag(p, "--request-timeout", "serve.request_timeout")
    config_flag(p, "--log-prompts", "serve.log_prompts")
    config_args(p)
    c = p.add_argument_group("repository context")
    c.add_argument("--context", metavar="PATH",
                   help="index this working tree and follow its changes (default: the index of "
                        "the run's dataset, when TARGET is a run)")
    config_flag(c, "--context-tokens", "serve.context_tokens")
    u = p.add_argument_group(
        "upstream", "generate on a batching engine (vLLM, TGI, llama.cpp server, Ollama) through "
                    "its OpenAI-compatible /v1/completions; codetune keeps its API, key, limits, "
                    "FIM prompts, stops and suffix trimming, and loads only the tokenizer")
    u.add_argument("--upstream", metavar="URL", help="the engine's address, e.g. "
                                                     "http://127.0.0.1:8000 (vllm serve)")
    u.add_argument("--upstream-model", metavar="NAME",
                   help="the model sent upstream: vLLM's LoRA module name or served model name "
                        "(default: the engine's only model, as its /v1/models lists it)")
    u.add_argument("--upstream-api-key-env", metavar="VAR",
                   help="environment variable holding the upstream's API key (sent as Bearer)")
    p.set_defaults(func=run)


def add_editor_config(sub) -> None:
    d = ServeConfig()
    e = sub.add_parser(
        "editor-config", help="print a Continue, llm-vscode or llama.vscode config for "
                              "`codetune serve`",
        description="Print a configuration snippet for an editor plugin. The FIM tokens come "
                    "from --family, from TARGET, or else from the server at --url.")
    e.add_argument("editor", choices=["continue", "llm-vscode", "llama-vscode"])
    e.add_argument("target", nargs="?", metavar="TARGET", help="the served run or model")
    e.add_argument("--url", default=f"http://127.0.0.1:{d.port}", help="the server's address")
    e.add_argument("--api-key-env", metavar="NAME",
                   help=f"the variable holding the API key (e.g. {API_KEY_ENV})")
    e.add_argument("--model-name", help="the model id (default: as the server reports it)")
    e.add_argument("--family", help="FIM tokens of this family (starcoder, qwen2.5-coder, "
                                    "codellama, deepseek-coder, ...)")
    e.set_defaults(func=_run_editor_config)


def run(args: argparse.Namespace) -> int:
    # lazy: codetune.serve (asyncio, infer) is ~50 ms of `codetune --help`
    from codetune.serve.limits import check_bindable

    resolve_target(args)
    # what serving TARGET changes of the defaults; a -c file, -s and the flags win over them
    derived: dict[str, object] = {"serve.model_name": _model_name_of(args.target)}
    if args.upstream:
        derived["serve.slots"] = UPSTREAM_SLOTS
    if os.environ.get(API_KEY_ENV):
        derived["serve.api_key"] = os.environ[API_KEY_ENV]
    settings = build_config(args, defaults=derived).serve  # checked before the (slow) load
    check_bindable(settings)
    from codetune.serve.app import serve  # lazy: as above
    from codetune.serve.context import open_context  # lazy: as above

    context = open_context(args.target, args.context, settings.context_tokens)

    if args.upstream:
        from codetune.serve.upstream import Upstream, load_front  # lazy: as above

        upstream = Upstream(args.upstream, args.upstream_model, _upstream_key(args))
        serve(load_front(args.target), settings, upstream, context)
        return 0
    serve(load_target(args), settings, context=context)
    return 0


def _upstream_key(args: argparse.Namespace) -> str | None:
    var = args.upstream_api_key_env
    if var is None:
        return None
    if not os.environ.get(var):
        raise CodetuneError(f"--upstream-api-key-env {var}: the variable is not set (or "
                            f"empty); export {var}=<the upstream's key> first")
    return os.environ[var]


def _run_editor_config(args: argparse.Namespace) -> int:
    # lazy: codetune.serve (asyncio, infer) is ~50 ms of `codetune --help`
    from codetune.serve.editors import editor_config, model_info

    model, fim, context = model_info(args.family, args.target, args.url, args.api_key_env,
                                     args.model_name)
    print(editor_config(args.editor, args.url, model, fim, args.api_key_env, context), end="")
    return 0


def _model_name_of(target: str) -> str:
    # lazy: codetune.serve (asyncio, infer) is ~50 ms of `codetune --help`
    from codetune.serve.editors import model_name_of

    return model_name_of(target)
