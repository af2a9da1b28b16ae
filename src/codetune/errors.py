"""User-facing errors.

A `CodetuneError` is a mistake the user can fix (a wrong flag, a missing file, a folder that
already exists). The CLI prints its message, which names the remedy, without a traceback and
exits with status 2. Anything else is a bug and keeps its traceback.
"""


class CodetuneError(Exception):
    """An error the user can fix; the message says how."""


class ConfigError(CodetuneError):
    """Configuration keys or values are wrong; the message names each field and its fix.

    `ConfigError(*problems)`: one problem is its own message; several are listed under a
    count, so a config with three mistakes costs one run to fix, not three."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        if len(problems) <= 1:
            message = "".join(problems)
        else:
            message = f"{len(problems)} problems in the config:\n" + "\n".join(
                f"  - {p}" for p in problems)
        super().__init__(message)
