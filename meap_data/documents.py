"""The records that flow through the core: documents, and the ones rejected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One raw document: its stable key and its text."""

    key: str
    text: str


@dataclass(frozen=True)
class Rejected:
    """An input that was not used, with a machine-readable reason and a human detail.

    Counted as one document in ``documents_read`` and one in ``documents_rejected``.
    """

    key: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict:
        return {"key": self.key, "reason": self.reason, "detail": self.detail}
