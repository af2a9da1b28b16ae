"""codetune: fine-tune a code LLM on your own repositories, with Fill-in-the-Middle, and prove it helped.

Importing the package is cheap: torch, transformers and friends are imported only by the
functions that need them, so `codetune --help` and `codetune prepare` work without a GPU stack.
"""

__version__ = "0.1.0"
