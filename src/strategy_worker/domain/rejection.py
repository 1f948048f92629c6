"""The one `Rejection` of the domain: why an input was refused, as data.

Every pure parser of outside input (`strategy.approved`, entry/exit rules, market bars)
returns a `Rejection` instead of raising: a stable machine-readable `code`, the field `path`
of the offending value (dotted, with `[i]` for list items) and a readable `message`.
`domain/strategy.py` re-exports it, so `strategy.Rejection` is this same class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: a stable `code`, the field `path` and a readable message."""

    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Rejected(Exception):
    """Raised inside a parser to carry a `Rejection` out; parsers return it, never raise it."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, path, message)
