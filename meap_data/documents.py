"""The records that flow through the core: documents, and the ones rejected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One raw document: its stable key and its text.

    ``origin``: where it was read (``relpath:line``...; empty means the key), unique even
    when two records share an ``id``: sample keys are hashed from it. A document too
    large to hold comes as consecutive pieces of the same key, ``last`` False on all but
    the final one (one document in the counts)."""

    key: str
    text: str
    origin: str = ""
    last: bool = True

    @property
    def where(self) -> str:
        return self.origin or self.key


def _printable(text: str) -> str:
    # Unpaired surrogates cannot be written as UTF-8: keep them visible as escapes.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Rejected:
    """An input that was not used, with a machine-readable reason and a human detail.

    Counted as one document in ``documents_read`` and one in ``documents_rejected``.
    """

    key: str
    reason: str
    detail: str = ""

    def to_json(self) -> dict:
        return {"key": _printable(self.key), "reason": self.reason, "detail": _printable(self.detail)}
