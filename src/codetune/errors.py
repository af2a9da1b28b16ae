"""User-facing errors.

A `CodetuneError` is a mistake the user can fix (a wrong flag, a missing file, a folder that
already exists). The CLI prints its message, which names the remedy, without a traceback and
exits with status 2. Anything else is a bug and keeps its traceback.
"""


class CodetuneError(Exception):
    """An error the user can fix; the message says how."""


class ConfigError(CodetuneError):
    """A configuration key or value is wrong; the message names the field and the fix."""
