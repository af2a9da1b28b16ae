"""codetune: fine-tune a code LLM on your own repositories, with Fill-in-the-Middle, and prove it helped.

Importing the package is cheap: torch, transformers and friends are imported only by the
functions that need them, so `codetune --help` and `codetune prepare` work without a GPU stack.
"""

__version__ = "0.1.0"


def _quiet_optional_kernel_notice() -> None:
    """bitsandbytes, imported by peft on any LoRA run, logs at import on CPUs with AVX-512 BF16
    that it could not fetch an optional 4-bit kernel from the Hub (the `kernels` package).
    Its own CPU code runs instead, so the line is noise on every CPU run and the demo; drop
    that one record, nothing else the library logs."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(keep)


_quiet_optional_kernel_notice()
