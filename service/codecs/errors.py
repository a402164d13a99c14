"""The one error every codec raises: an instance that cannot be used, with the client-facing reason."""

from __future__ import annotations


class CodecError(ValueError):
    """An instance that cannot be used; the message is the client-facing reason (the caller adds which one)."""
