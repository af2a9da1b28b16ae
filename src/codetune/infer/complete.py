"""`codetune complete`: fill one hole (or continue one prefix) from the command line.

    complete(loaded, prefix, suffix, params)  -> Completion    (a notebook can call this too)
    hole_in_file(path, line, column)          -> (prefix, suffix) at a cursor position

The prompt is the family's FIM prompt (`inference.completion_prompt`); a prefix alone, on a model
without FIM tokens, is completed left to right. Generation stops at EOS, every FIM sentinel and
file separator, any `--stop` string, and where the middle starts to repeat the suffix (cut there:
`inference.Finisher`); only the new text is returned, never the prompt.
"""


from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer.generate import GenerationStream, GenParams
from codetune.infer.prompts import completion_prompt


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (stop token or string) or "length" (max_new_tokens / context)
    mode: str  # "fim" or "plain" (left-to-right)
    prompt_tokens: int
    completion_tokens: int
    trimmed_suffix: bool = False  # the middle went on into the suffix and was cut there


def complete(loaded: Any, prefix: str, suffix: str | None = None, params: Any = None,
             on_text: Any = None) -> Completion:
    """Complete the hole between `prefix` and `suffix` with `loaded` (`inference.load`).

    `on_text(piece)` is called with the text as it is generated (pieces never run past a stop,
    nor into a repetition of the suffix: such text is held back until decided).
    """
    params = params or GenParams()
    prompt, mode = completion_prompt(loaded, prefix, suffix)
    stream = GenerationStream(loaded, prompt, params, prefix=prefix, suffix=suffix or "")
    for piece in stream:
        if on_text is not None:
            on_text(piece)
    return Completion(stream.text, stream.finish_reason or "length", mode, stream.prompt_tokens,
                      stream.completion_tokens, stream.trimmed_suffix)


def hole_in_file(path: str | Path, line: int, column: int | None = None) -> tuple[str, str]:
    """(prefix, suffix) of a file split at a cursor: `line` and `column` count from 1, in
    characters, as editors show them; no column = the end of that line (before its newline)."""
    path = Path(path)
    if not path.is_file():
        raise CodetuneError(f"file {path} does not exist (or is not a file); check the path")
    try:
        text = path.read_bytes().decode("utf-8")  # not read_text: keep "\r\n" as it is
    except UnicodeDecodeError:
        raise CodetuneError(f"{path} is not UTF-8 text; complete works on source files") from None
    lines = text.split("\n")  # a file ending in "\n" has an empty last line: the cursor can go there
    if not 1 <= line <= len(lines):
        raise CodetuneError(f"--line {line} is out of range: {path} has lines 1 to {len(lines)}")
    content = lines[line - 1].removesuffix("\r")
    if column is None:
        column = len(content) + 1
    if not 1 <= column <= len(content) + 1:
        raise CodetuneError(f"--column {column} is out of range: line {line} of {path} has "
                            f"columns 1 to {len(content) + 1}")
    offset = sum(len(x) + 1 for x in lines[:line - 1]) + column - 1
    return text[:offset], text[offset:]
