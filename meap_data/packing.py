"""Packing token streams into fixed-length samples, keeping document boundaries.

Packed (default): each document's tokens plus the end-of-document id are concatenated
and cut every ``seq_len`` tokens; a document may span samples. Unpacked: each document
(plus eos) starts its own sample; long ones are split, the last piece padded.
Nothing is dropped: the final partial sample of a stream is padded (labels -100 there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .keys import sample_key
from .sample_format import IGNORE_INDEX, SampleRows


@dataclass
class _Row:
    key: str
    tokens: list = field(default_factory=list)  # numpy pieces
    filled: int = 0
    offsets: list = field(default_factory=list)
    doc_keys: list = field(default_factory=list)


class Packer:
    """Accumulates documents' tokens into samples of ``seq_len`` tokens.

    ``add`` documents in order, take finished rows with ``drain``, and ``finish`` at the
    end of the stream to pad and release the last partial row.
    """

    def __init__(self, seq_len: int, eos_id: int, pad_id: int, pack: bool = True, bos_id: int | None = None):
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.pack = pack
        self._eos = np.array([eos_id], dtype=np.int32)
        self._bos = np.array([] if bos_id is None else [bos_id], dtype=np.int32)
        self._current: _Row | None = None
        self._done: list[_Row] = []
        self._continuing = 0  # tokens of the open document so far (pieces of one document)

    def add(self, doc_key: str, ids: np.ndarray, origin: str | None = None, last: bool = True) -> None:
        """Append one document's token ids (the eos id, and the bos id when given, are
        added here). ``origin``: what sample keys are hashed from (default the key; a
        document's input position keeps keys unique when ids repeat). A document given in
        pieces: every piece but the final one with ``last=False``; no boundary between them."""
        first = self._continuing == 0
        parts = [self._bos] if first else []
        parts.append(np.asarray(ids, dtype=np.int32))
        if last:
            parts.append(self._eos)
        tokens = np.concatenate(parts)
        if first and not self.pack and self._current is not None:
            self._close()
        identity = origin or doc_key
        pos = 0
        while pos < len(tokens):
            if self._current is None:
                self._current = _Row(sample_key(identity, self._continuing + pos))
            row = self._current
            take = min(self.seq_len - row.filled, len(tokens) - pos)
            if not row.doc_keys or (first and pos == 0):  # a document piece starts in this row
                row.offsets.append(row.filled)
                row.doc_keys.append(doc_key)
            row.tokens.append(tokens[pos : pos + take])
            row.filled += take
            pos += take
            if row.filled == self.seq_len:
                self._close()
        self._continuing = 0 if last else self._continuing + len(tokens)

    def _close(self) -> None:
        if self._current is not None:
            self._done.append(self._current)
            self._current = None

    def finish(self) -> None:
        """End of stream: the partial row (if any) becomes a padded sample."""
        self._close()

    def pending_rows(self) -> int:
        return len(self._done)

    def drain(self, max_rows: int | None = None) -> SampleRows | None:
        """The finished rows (the first ``max_rows`` of them, when given) as one batch of
        clean samples, ready for masking: labels (-100 on padding), lengths, keys and
        document pieces; no inputs or mask spans yet (None when no row is finished)."""
        if not self._done:
            return None
        take = len(self._done) if max_rows is None else max_rows
        rows, self._done = self._done[:take], self._done[take:]
        labels = np.full((len(rows), self.seq_len), IGNORE_INDEX, dtype=np.int32)
        lengths = np.empty(len(rows), dtype=np.int32)
        for r, row in enumerate(rows):
            flat = np.concatenate(row.tokens) if len(row.tokens) > 1 else row.tokens[0]
            labels[r, : len(flat)] = flat
            lengths[r] = len(flat)
        return SampleRows(
            input_ids=None,
            labels=labels,
            lengths=lengths,
            mask_spans=None,
            keys=[row.key for row in rows],
            doc_offsets=[row.offsets for row in rows],
            doc_keys=[row.doc_keys for row in rows],
        )
