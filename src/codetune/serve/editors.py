"""`codetune editor-config`: ready-made settings for editor plugins that talk to `serve`.

Continue (an OpenAI-compatible autocomplete model with the family's FIM template),
llm-vscode (the TGI-style `/generate` backend with `llm.fillInTheMiddle.*` tokens) and
llama.vscode (llama.cpp's `/infill`, which sends chunks of the files open in the editor). The FIM
tokens come from --family, from TARGET's tokenizer, or from the running server's /v1/models.

Repository context: Continue's template, for families with repository tokens, is the
repository layout with the repository name and the file's path and no snippets, which the
server completes with snippets of other files (`serve.context.parse_repo_prompt`); llama.vscode
gets server-side retrieval through `/infill` on top of its own chunks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer.loader import tokenizer_and_fim
from codetune.serve.app import fim_info


def editor_config(editor: str, url: str, model: str, fim: dict[str, Any] | None,
                  api_key_env: str | None = None, context: int | None = None) -> str:
    """A configuration snippet for `editor` ("continue" or "llm-vscode") pointing at `url`;
    `context`: the tokens a prompt plus its completion may use on the server."""
    url = url.rstrip("/")
    if fim is None:
        raise CodetuneError(f"model {model} has no FIM tokens, so editors cannot infill with it")
    template = fim["prefix"] + "{{{prefix}}}" + fim["suffix"] + "{{{suffix}}}" + fim["middle"]
    if fim.get("file_sep"):  # the repository layout, snippets left to the server
        head = (fim["repo_name"] + "{{{reponame}}}" + ("\n" if fim.get("repo_name_newline")
                                                         else "")) if fim.get("repo_name") else ""
        if fim.get("path_in_prefix"):  # StarCoder2: the path opens the FIM prefix
            template = (head + fim["file_sep"] + fim["prefix"] + "{{{filename}}}\n{{{prefix}}}"
                        + fim["suffix"] + "{{{suffix}}}" + fim["middle"])
        else:
            template = head + fim["file_sep"] + "{{{filename}}}\n" + template
    if editor == "continue":
        # Continue's config.yaml (docs.continue.dev/reference: models, roles, promptTemplates,
        # defaultCompletionOptions; apiBase + useLegacyCompletionsEndpoint from
        # docs.continue.dev/customize/model-providers/top-level/openai, "OpenAI API compatible
        # providers"; ${{ secrets.X }} is read from ~/.continue/.env).
        lines = [
            "# ~/.continue/config.yaml (or merge the model into yours)",
            "name: codetune", "version: 0.0.1", "schema: v1", "models:",
            f"  - name: {model} (codetune)", "    provider: openai", f"    model: {model}",
            f"    apiBase: {url}/v1",
            "    useLegacyCompletionsEndpoint: true", "    roles:", "      - autocomplete",
            "    promptTemplates:", f"      autocomplete: {json.dumps(template)}",
            "    defaultCompletionOptions:", "      temperature: 0.2", "      topP: 0.95",
            "      maxTokens: 128", f"      stop: {json.dumps(fim['stop'], ensure_ascii=False)}"]
        if context:
            lines.append(f"      contextLength: {context}")
        if api_key_env:
            lines.insert(1, f"# put {api_key_env}=<the server's key> in ~/.continue/.env")
            lines.insert(lines.index("    useLegacyCompletionsEndpoint: true"),
                         f"    apiKey: ${{{{ secrets.{api_key_env} }}}}")
        return "\n".join(lines) + "\n"
    if editor == "llm-vscode":
        # llm-vscode's settings (huggingface/llm-vscode README "Backend", "URL construction"),
        # sent by llm-ls as TGI's {"inputs", "parameters"} -> {"generated_text"}
        # (huggingface/llm-ls crates/llm-ls/src/backend.rs, build_body / parse_tgi_text).
        settings = {
            "llm.backend": "tgi", "llm.url": f"{url}/generate", "llm.modelId": model,
            "llm.fillInTheMiddle.enabled": True, "llm.fillInTheMiddle.prefix": fim["prefix"],
            "llm.fillInTheMiddle.suffix": fim["suffix"],
            "llm.fillInTheMiddle.middle": fim["middle"],
            "llm.requestBody": {"parameters": {"max_new_tokens": 60, "temperature": 0.2,
                                               "top_p": 0.95}},
            # llm-ls fits the prompt into contextWindow; leave room for max_new_tokens
            "llm.tokensToClear": fim["stop"],
            "llm.contextWindow": max(context - 61, 64) if context else 2048,
            "llm.tokenizer": None}
        head = ["// VS Code settings.json (llm-vscode). llm.tokenizer null: llm-ls counts "
                "characters, which keeps the prompt within llm.contextWindow tokens."]
        if api_key_env:
            head.append(f"// API key: run 'Llm: Login' and paste the value of ${api_key_env}; "
                        "llm-ls sends it as 'Authorization: Bearer'.")
        return "\n".join(head) + "\n" + json.dumps(settings, indent=2, ensure_ascii=False) + "\n"
    if editor == "llama-vscode":
        # llama.vscode posts llama.cpp's /infill (input_prefix, input_suffix, input_extra) to
        # `llama-vscode.endpoint` (ggml-org/llama.vscode README; llama.cpp server README
        # "POST /infill"); codetune builds the FIM prompt and adds repository context.
        settings = {"llama-vscode.endpoint": url, "llama-vscode.n_predict": 128,
                    "llama-vscode.ask_install_llamacpp": False}
        head = ["// VS Code settings.json (llama.vscode): completions from codetune's /infill"]
        if api_key_env:
            settings["llama-vscode.api_key"] = f"<the value of ${api_key_env}>"
            head.append("// llama-vscode.api_key is sent as 'Authorization: Bearer'")
        return "\n".join(head) + "\n" + json.dumps(settings, indent=2, ensure_ascii=False) + "\n"
    raise CodetuneError(f"unknown editor {editor!r}; choose continue, llm-vscode or "
                        "llama-vscode")


def model_info(family: str | None, target: str | None, url: str, api_key_env: str | None,
               model_name: str | None) -> tuple[str, dict[str, Any] | None, int | None]:
    """(model id, FIM tokens, context window) from `family`, `target`, or the server at `url`."""
    from codetune.tokens.fim import FIM_FORMATS  # tokens.fim imports numpy (~0.1 s)

    if family:
        if family not in FIM_FORMATS:
            raise CodetuneError(f"unknown FIM family {family!r}; choose one of: "
                                f"{', '.join(FIM_FORMATS)}")
        f = FIM_FORMATS[family]
        stop = [s for s in (f.eos, f.eot, f.file_sep, f.repo_name, f.prefix, f.suffix, f.middle,
                            f.pad) if s]
        fim = {"family": f.family, "prefix": f.prefix + (" " if f.sentencepiece_spacing else ""),
               "suffix": f.suffix, "middle": f.middle, "stop": stop, "file_sep": f.file_sep,
               "repo_name": f.repo_name, "repo_name_newline": f.repo_name_newline,
               "path_in_prefix": f.path_in_fim_prefix}
        return model_name or "codetune", fim, None
    if target:
        _, fim = tokenizer_and_fim(target)
        return model_name or model_name_of(target), fim_info(fim), None
    import urllib.request  # urllib.request: ~60 ms (ssl), editor-config only

    req = urllib.request.Request(url.rstrip("/") + "/v1/models")
    if api_key_env and os.environ.get(api_key_env):
        req.add_header("Authorization", f"Bearer {os.environ[api_key_env]}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            entry = json.load(r)["data"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise CodetuneError(
            f"could not ask the server at {url} which model it serves ({e}); start "
            "`codetune serve` first, or give the TARGET or --family") from None
    info = entry.get("codetune", {})
    limit = info.get("max_prompt_tokens")  # the prompt may use the whole window but one token
    return model_name or entry["id"], info.get("fim"), limit + 1 if limit else None


def model_name_of(target: str) -> str:
    path = Path(target)
    return path.resolve().name if path.exists() else target
