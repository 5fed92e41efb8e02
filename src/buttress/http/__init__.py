"""The HTTP transport: an ASGI app around a built service (:func:`create_app`)."""

from buttress.http.app import create_app

__all__ = ["create_app"]
