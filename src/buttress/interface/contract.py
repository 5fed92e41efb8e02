"""What the input interface reports: contract violations, and why a request was refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNKNOWN_FIELD = "<unknown>"
"""The ``field`` (metric label) of every unknown key: their names come from the client, so they
are never labels. The names are kept in ``path``, for the request's event."""
MAX_UNKNOWN_KEYS_LISTED = 20
"""Unknown keys listed one by one per request; the rest are one violation with a ``count``."""
MAX_KEY_CHARS = 64
"""A client's key longer than this is cut in the paths a violation reports."""


@dataclass(frozen=True, slots=True)
class ContractViolation:
    """One way a request broke the input contract.

    ``kind`` is one of ``defaulted`` (bad value replaced by the field's default), ``renamed``
    (the value arrived under an alias), ``unknown_key`` (a key the model does not declare),
    ``missing`` and ``invalid`` (required field absent or unusable: the request is refused).
    ``path`` is exact (``sub_orders[3].margin``, client keys cut at :data:`MAX_KEY_CHARS`);
    ``field`` is a metric label, so it is built from the contract's own field names only:
    list indices become ``[]`` (``sub_orders[].margin``), an unknown key is
    :data:`UNKNOWN_FIELD`. ``count`` is more than 1 only for the one violation that stands for
    the unknown keys of a request past the first :data:`MAX_UNKNOWN_KEYS_LISTED`.
    """

    path: str
    field: str
    kind: str
    expected: str = ""
    received: str = ""
    message: str = ""
    count: int = 1

    def as_dict(self) -> dict[str, str | int]:
        shown: dict[str, str | int] = {
            "field": self.path,
            "kind": self.kind,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }
        if self.count != 1:
            shown["count"] = self.count
        return shown


class InputRejected(Exception):
    """The request cannot be served: ``status`` is 400, 413 or 422."""

    def __init__(
        self, status: int, message: str, violations: Sequence[ContractViolation] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.violations = list(violations)


@dataclass(slots=True)
class ParsedInput:
    value: Any
    """The validated :class:`~buttress.interface.Input` instance."""
    violations: list[ContractViolation]

    @property
    def defaulted(self) -> bool:
        violations = self.violations  # nearly always empty: skip the generator then
        return bool(violations) and any(v.kind == "defaulted" for v in violations)
