"""One error type for both sides of the protocol: an HTTP status and the ``error`` message.

The server raises it to answer ``{"error": message}`` with ``status``; the client raises it
when a server answered so.
"""

from __future__ import annotations


class OipError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"OipError({self.status}, {self.message!r})"
