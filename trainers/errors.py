"""The root of every error the project raises on purpose: :class:`WenError`.

One ``except WenError`` (the CLI's) catches every refusal that states its rule and fix, while
each class keeps the builtin base (``ValueError``, ``RuntimeError``, ``KeyError``) that older
callers catch. A leaf module: it imports nothing of the project, so anything may import it.

>>> from trainers.config import ConfigError
>>> issubclass(ConfigError, WenError) and issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["WenError"]


class WenError(Exception):
    """An expected failure whose message names the rule, the value and the fix."""
