"""Parse and validate backend URLs; an unknown scheme is an error naming the known ones.

``redis+sentinel://h1:26379,h2:26379/mymaster/0`` names a Redis found through Sentinel: the
sentinels, the master's service name, the database (see :mod:`buttress.backends.sentinel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

KNOWN_SCHEMES = ("memory", "sqlite", "redis", "rediss", "redis+sentinel")
SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


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
    # redis+sentinel:// only: the sentinels asked for the master; ``path`` is its service name
    sentinels: tuple[tuple[str, int], ...] = ()

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"

    @property
    def is_sqlite(self) -> bool:
        return self.scheme == "sqlite"

    @property
    def is_redis(self) -> bool:
        """Any Redis: one server (``redis://``, ``rediss://``) or one found by Sentinel."""
        return self.scheme in ("redis", "rediss", SENTINEL_SCHEME)

    @property
    def is_sentinel(self) -> bool:
        return self.scheme == SENTINEL_SCHEME

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
    if scheme == SENTINEL_SCHEME:
        return _parse_sentinel_url(url, parts.netloc, parts.path, options)
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


def _parse_sentinel_url(url: str, netloc: str, path: str, options: dict[str, str]) -> BackendURL:
    """``redis+sentinel://host[:port][,host[:port]...]/service_name[/db]``.

    ``urlsplit`` cannot read a comma-separated host list (``.port`` raises), so the hosts are
    split here. A host without a port means 26379, Sentinel's own default.
    """
    example = "redis+sentinel://sentinel-a:26379,sentinel-b:26379/mymaster/0"
    if "@" in netloc:
        raise ValueError(f"sentinel URL {url!r}: credentials in the URL are not supported yet")
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host or (port and not port.isdigit()):
            raise ValueError(f"sentinel URL {url!r}: {item!r} is not host[:port]")
        sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
    if not sentinels:
        raise ValueError(f"sentinel URL {url!r} names no sentinel: {example}")
    service, _, db_part = path.strip("/").partition("/")
    if not service:
        raise ValueError(f"sentinel URL {url!r} names no master (service name): {example}")
    if db_part and not db_part.isdigit():
        raise ValueError(f"sentinel URL {url!r}: after the service name comes a database "
                         f"number: {example}")
    return BackendURL(raw=url, scheme=SENTINEL_SCHEME, host=netloc, path=service,
                      db=int(db_part or 0), options=options, sentinels=tuple(sentinels))
