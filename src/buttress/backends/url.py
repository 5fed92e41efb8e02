"""Parse and validate backend URLs; an unknown scheme is an error naming the known ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

KNOWN_SCHEMES = ("memory", "sqlite", "redis", "rediss")


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. ``options`` holds the query string (``?timeout=50ms``)."""

    raw: str
    scheme: str
    host: str = ""
    port: int | None = None
    path: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"

    @property
    def is_sqlite(self) -> bool:
        return self.scheme == "sqlite"

    @property
    def is_redis(self) -> bool:
        return self.scheme in ("redis", "rediss")

    def redacted(self) -> str:
        """The URL without a password, for logs and error messages."""
        parts = urlsplit(self.raw)
        if parts.password:
            return self.raw.replace(f":{parts.password}@", ":***@")
        return self.raw


def parse_backend_url(url: str) -> BackendURL:
    """Parse ``url``; raise ``ValueError`` naming the known schemes when it is not one of them."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in KNOWN_SCHEMES:
        known = ", ".join(f"{s}://" for s in KNOWN_SCHEMES)
        raise ValueError(f"unknown backend URL {url!r}: the scheme must be one of {known}")
    options = dict(parse_qsl(parts.query))
    if scheme == "memory":
        return BackendURL(raw=url, scheme=scheme, host=parts.netloc, options=options)
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////abs/path.db, as SQLAlchemy spells them.
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ValueError(f"sqlite URL {url!r} needs a path: sqlite:///path/to/file.db")
        return BackendURL(raw=url, scheme=scheme, path=path, options=options)
    db_part = parts.path.lstrip("/")
    if db_part and not db_part.isdigit():
        raise ValueError(f"redis URL {url!r}: the path must be a database number, e.g. /0")
    return BackendURL(
        raw=url,
        scheme=scheme,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(db_part or 0),
        options=options,
    )
