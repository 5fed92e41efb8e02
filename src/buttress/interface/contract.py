"""What the input interface reports: contract violations, and why a request was refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ContractViolation:
    """One way a request broke the input contract.

    ``kind`` is one of ``defaulted`` (bad value replaced by the field's default), ``renamed``
    (the value arrived under an alias), ``unknown_key`` (a key the model does not declare),
    ``missing`` and ``invalid`` (required field absent or unusable: the request is refused).
    ``path`` is exact (``sub_orders[3].margin``); ``field`` drops list indices so it can be a
    metric label of bounded cardinality (``sub_orders[].margin``).
    """

    path: str
    field: str
    kind: str
    expected: str = ""
    received: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.path,
            "kind": self.kind,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }


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
