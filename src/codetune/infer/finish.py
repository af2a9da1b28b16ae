"""Where a completion ends: the one post-processing step of complete, serve and eval.

A `Finisher` ends a completion at the earliest of a stop string, or a middle that starts to
reproduce the suffix (models that do not emit EOS right after the middle run into the code
after the hole; an editor would insert it twice). It is called per token, so generation stops
as soon as the repetition shows, and it says how much streamed text to hold back."""

from __future__ import annotations


def cut_at_stops(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


MIN_REPEAT_CHARS = 8
"""Non-blank characters of the suffix's beginning that the end of a completion must reproduce
before it counts as the suffix starting over (rule 2 of `Finisher`). No common closing token
reaches it (`)`, `]`, `});`, `\"\"\"`, a newline), and a completion ending in one of those
usually closes its own brackets (`print(` + `len(xs)` + suffix `)`), so those are never cut.
8 is about three tokens of code: no coincidence once it also runs to the end of a line."""


class Finisher:
    """Where one completion ends, decided on its text so far (strings only, no model).

    It ends at the earliest of
    - a stop string (cut before it). One-line completion is the stop string "\\n": eval's
      single-line tasks, `complete --stop $'\\n'`, a client's `stop: ["\\n"]`;
    - the suffix starting over. A model that does not emit EOS right after the middle goes on
      with the code after the hole, which an editor would then insert twice. Two signs:
      1. a generated line equals the suffix's first non-blank line, trailing whitespace ignored.
         Its indentation must match as well (the line the hole is on is completed with the
         prefix's last line), so that a nested `}`, `else:` or `return x` inside the middle does
         not match the outer one after the hole. The completion is cut before that line, and
         the blank lines in front of it that the suffix also starts with are dropped.
      2. the text ends with the suffix's beginning reproduced through the end of one of the
         suffix's lines, with at least `MIN_REPEAT_CHARS` non-blank characters (a mid-line
         hole: `foo(a` + `, b)\\n    return x\\n`). That tail is cut. Waiting for a line end keeps
         a middle line that only begins like the suffix's first one (`self.assertEqual(a, 1)`
         above `self.assertEqual(b, 2)`) from being cut while it is being written.
      Both are checked as the text grows, so generation stops there. When it ends anyway (EOS,
      the token budget) the unfinished last line counts as a line for rule 1, and rule 2 takes
      any beginning with `MIN_REPEAT_CHARS` non-blank characters.

    `step(text)` while generating and `finish(text)` at the end return (the completion, why it
    ended: None to go on, "stop", or "suffix" when the suffix rules cut it). `holdback(text)`:
    how many characters at the end a stream must not show yet, since a later token may cut them.
    """

    def __init__(self, stops: tuple[str, ...] | list[str] = (), suffix: str | None = None,
                 prefix: str | None = None) -> None:
        self.stops = tuple(s for s in stops if s)
        self.suffix = suffix = suffix or ""
        self.prefix_line = (prefix or "").rpartition("\n")[2]
        # rule 1: the anchor line (rstripped), the suffix before it, and whether it is the
        # suffix's first line (the rest of the hole's line: compared as it is, no prefix line)
        self.anchor: str | None = None
        self.head, self.anchor_first = "", True
        pos = 0
        while pos <= len(suffix):
            end = suffix.find("\n", pos)
            end = len(suffix) if end < 0 else end
            if suffix[pos:end].strip():
                self.anchor, self.head = suffix[pos:end].rstrip(), suffix[:pos]
                self.anchor_first = pos == 0
                break
            pos = end + 1
        # rule 2: a tail suffix[:k] counts for k >= k_final at the end, for k >= k_line before
        self.k_final: int | None = None
        self.k_line: int | None = None
        seen = 0
        for i, c in enumerate(suffix):
            seen += not c.isspace()
            if seen == MIN_REPEAT_CHARS:
                self.k_final = i + 1
                self.k_line = suffix.find("\n", i) + 1 or len(suffix)
                break

    def step(self, text: str) -> tuple[str, str | None]:
        cut, hit = cut_at_stops(text, self.stops)
        if hit:
            cut, why = self.finish(cut)
            return cut, why or "stop"
        at = self._repeat_at(text, final=False)
        return (text, None) if at is None else (text[:at], "suffix")

    def finish(self, text: str) -> tuple[str, str | None]:
        at = self._repeat_at(text, final=True)
        return (text, None) if at is None else (text[:at], "suffix")

    def holdback(self, text: str) -> int:
        keep = _holdback(text, self.stops)
        if not self.suffix or not text:
            return keep
        # a tail that begins the suffix: rule 2 may still cut it (or rule 1, as blank lines)
        longest = len(self.suffix) if self.k_final is not None else len(self.head)
        k = self._tail_in_suffix(text, longest, 1)
        keep = max(keep, k or 0)
        if self.anchor is not None:  # the unfinished last line, while it may become the anchor
            pos = text.rfind("\n") + 1
            line = self._line(text, pos, len(text))
            if self.anchor.startswith(line) or line.rstrip() == self.anchor:
                keep = max(keep, len(text) - self._before_head(text, pos))
        return keep

    def _repeat_at(self, text: str, final: bool) -> int | None:
        """Where the suffix starts over in `text` (rule 1 or 2, the earlier), or None."""
        cuts = []
        if self.anchor is not None:
            pos = 0
            while True:
                end = text.find("\n", pos)
                if end < 0 and not final:
                    break
                end = len(text) if end < 0 else end
                if self._line(text, pos, end).rstrip() == self.anchor:
                    cuts.append(self._before_head(text, pos))
                    break
                if end == len(text):
                    break
                pos = end + 1
        shortest = self.k_final if final else self.k_line
        if shortest is not None:
            k = self._tail_in_suffix(text, len(self.suffix), shortest)
            if k is not None:
                cuts.append(len(text) - k)
        return min(cuts, default=None)

    def _line(self, text: str, pos: int, end: int) -> str:
        """The generated line text[pos:end] as it stands in the file: the first one continues
        the prefix's last line (unless the anchor is the suffix's first line: see __init__)."""
        if pos == 0 and not self.anchor_first:
            return self.prefix_line + text[:end]
        return text[pos:end]

    def _before_head(self, text: str, pos: int) -> int:
        """`pos` moved back over text the suffix starts with before its anchor line."""
        for k in range(min(len(self.head), pos), 0, -1):
            if text.endswith(self.head[:k], 0, pos):
                return pos - k
        return pos

    def _tail_in_suffix(self, text: str, longest: int, shortest: int) -> int | None:
        """The largest k in [shortest, longest] with text ending in suffix[:k], or None."""
        s, last = self.suffix, text[-1] if text else ""
        for k in range(min(longest, len(s), len(text)), shortest - 1, -1):
            if s[k - 1] == last and text.endswith(s[:k]):
                return k
        return None


def trim_completion(text: str, suffix: str | None = None, prefix: str | None = None,
                    stops: tuple[str, ...] | list[str] = ()) -> tuple[str, bool]:
    """A whole generated text as `Finisher` ends it when it arrives one character at a time:
    (the completion, whether the suffix rules cut it). For tests and for text generated
    elsewhere; generation itself checks token by token and stops there."""
    f = Finisher(stops, suffix, prefix)
    for i in range(1, len(text) + 1):
        cut, why = f.step(text[:i])
        if why is not None:
            return cut, why == "suffix"
    cut, why = f.finish(text)
    return cut, why == "suffix"


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` must not be shown yet: the longest tail that could
    still grow into a stop string, and an unfinished UTF-8 character (decoded as U+FFFD)."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep
