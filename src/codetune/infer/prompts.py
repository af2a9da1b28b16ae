"""Prompts for generation: the family's FIM prompt (built by `tokens.fim`, as in training),
plain and raw prompts, the stop tokens, and reading prefix and suffix back from a FIM prompt."""

from __future__ import annotations

from codetune.errors import CodetuneError
from codetune.infer.loader import Loaded


def fim_prompt(loaded: Loaded, prefix: str, suffix: str, repo=None) -> list[int]:
    """Token ids of the FIM prompt (PSM) for this model family; `repo`
    (`tokens.fim.RepoContext`) puts repository context in front, as in repo-mode training."""
    from codetune.tokens.fim import build_prompt  # tokens.fim imports numpy (~0.1 s)

    if loaded.fim is None:
        raise CodetuneError(
            "this model's tokenizer has no Fill-in-the-Middle tokens, so it cannot infill; "
            "give only a prefix (left-to-right completion) or use a FIM-trained model")
    return build_prompt(loaded.tokenizer, loaded.fim, prefix, suffix, repo=repo)


def stop_ids(loaded: Loaded) -> list[int]:
    ids = set(loaded.fim.stop_ids) if loaded.fim is not None else set()
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return sorted(ids)


def prompt_hole(loaded: Loaded, ids: list[int]) -> tuple[str, str] | None:
    """(prefix, suffix) of a FIM prompt in PSM order, `[BOS] .. [P] prefix [S] suffix [M]`, as
    `fim_prompt` builds and editors that format the prompt themselves send; else None."""
    fim = loaded.fim
    if fim is None or not ids or ids[-1] != fim.middle_id:
        return None
    from codetune.tokens.fim import decode_middle  # tokens.fim imports numpy (~0.1 s)

    ids = list(ids)
    try:
        p = len(ids) - 1 - ids[::-1].index(fim.prefix_id)
        s = ids.index(fim.suffix_id, p)
    except ValueError:
        return None
    # the prefix was encoded alone, the suffix as a continuation (decoded like a middle)
    tok, body = loaded.tokenizer, ids[p + 1:s]
    prefix = tok.decode(body, skip_special_tokens=True)
    if fim.format.sentencepiece_spacing and "\n" not in prefix:
        from codetune.tokens.fim import _encode  # tokens.fim imports numpy (~0.1 s)

        # the decoder drops a leading space; only its last line matters here, so only a
        # one-line prefix needs the check
        if _encode(tok, prefix) != body and _encode(tok, " " + prefix) == body:
            prefix = " " + prefix
    return prefix, decode_middle(tok, fim, ids[s + 1:-1])


def decode(loaded: Loaded, ids: list[int]) -> str:
    if loaded.fim is not None:
        from codetune.tokens.fim import decode_middle  # tokens.fim imports numpy (~0.1 s)

        return decode_middle(loaded.tokenizer, loaded.fim, ids)
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)


def _bos(loaded: Loaded) -> list[int]:
    from codetune.tokens.fim import auto_bos  # tokens.fim imports numpy (~0.1 s)

    bos = auto_bos(loaded.tokenizer)
    return [] if bos is None else [bos]


def plain_prompt(loaded: Loaded, text: str) -> list[int]:
    """Left-to-right prompt: `text` taken literally (a "<fim_prefix>" in it stays text), with BOS
    when the tokenizer uses one."""
    ids = loaded.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    return _bos(loaded) + list(ids)


def raw_prompt(loaded: Loaded, text: str) -> list[int]:
    """A prompt the client formatted itself (llm-vscode, Continue templates send
    "<fim_prefix>...<fim_suffix>...<fim_middle>"): special tokens in `text` ARE recognised."""
    ids = list(loaded.tokenizer.encode(text, add_special_tokens=False))
    bos = _bos(loaded)
    return ids if ids[:1] == bos else bos + ids


def completion_prompt(loaded: Loaded, prefix: str, suffix: str | None) -> tuple[list[int], str]:
    """(prompt ids, mode): a FIM prompt when the model has FIM tokens ("fim"); with no suffix and
    no FIM tokens, plain left-to-right completion of `prefix` ("plain")."""
    if loaded.fim is None and not suffix:
        return plain_prompt(loaded, prefix), "plain"
    return fim_prompt(loaded, prefix, suffix or ""), "fim"
