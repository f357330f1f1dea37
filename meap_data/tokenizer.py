"""Loading, training and preparing Hugging Face tokenizers for MEAP.

A tokenizer is any ``tokenizer.json`` (a path) or a hub name (loaded through
``tokenizers.Tokenizer.from_pretrained``; needs a network). :func:`prepare_tokenizer`
adds the ``[MASK]`` special token when absent, and an end-of-document token when the
tokenizer has none, and records their ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

from tokenizers import Tokenizer

from .errors import MeapDataError

MASK_TOKEN = "[MASK]"
DEFAULT_EOS_TOKEN = "<|endoftext|>"
DEFAULT_BOS_TOKEN = "<|startoftext|>"
# Names tokenizers commonly give their end-of-document token, most specific first.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<EOT>", "<|eot_id|>",
                  "<|end|>", "<end_of_turn>", "<|im_end|>")
# ... and their beginning-of-document token (only used with --add-bos).
BOS_CANDIDATES = ("<|startoftext|>", "<|begin_of_text|>", "<s>", "<bos>", "[BOS]", "<BOS>", "<|bos|>")

log = logging.getLogger("meap_data")


@dataclass(frozen=True)
class TokenizerInfo:
    """The prepared tokenizer as JSON text, with the ids the pipeline needs."""

    json: str
    sha256: str
    vocab_size: int
    mask_token: str
    mask_token_id: int
    eos_token: str
    eos_token_id: int
    pad_token_id: int
    bos_token: str | None = None  # set only when documents get a BOS (--add-bos)
    bos_token_id: int | None = None
    added_tokens: tuple[str, ...] = ()  # what prepare added to the given tokenizer
    # The encoder backend the run chose (meap_data.encoders): travels to the workers with
    # the tokenizer, but is not part of the dataset (the ids are the same either way).
    backend: str = "hf"

    @property
    def pad_token(self) -> str:
        """Padding reuses the eos token (never a target: labels are -100 there)."""
        return self.eos_token

    def build(self) -> Tokenizer:
        return Tokenizer.from_str(self.json)

    def encoder(self):
        """The batch encoder of :attr:`backend` (see :func:`meap_data.encoders.build_encoder`)."""
        from .encoders import build_encoder

        return build_encoder(self.json, self.backend)

    def manifest_entry(self) -> dict:
        return {
            "file": "tokenizer.json",
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "mask_token": self.mask_token,
            "mask_token_id": self.mask_token_id,
            "eos_token": self.eos_token,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            **({"bos_token": self.bos_token, "bos_token_id": self.bos_token_id} if self.bos_token else {}),
            "added_tokens": list(self.added_tokens),
        }


def load_tokenizer(path_or_name: str) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` path, a directory holding one, or a hub name."""
    path = os.path.expanduser(path_or_name)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if os.path.isfile(path):
        try:
            return Tokenizer.from_file(path)
        except Exception as exc:
            raise MeapDataError(f"tokenizer file {path!r} is not a valid tokenizer.json: {exc}") from exc
    if os.sep in path_or_name and not path_or_name.count("/") == 1:
        raise MeapDataError(f"tokenizer {path_or_name!r}: no such file")
    try:
        return Tokenizer.from_pretrained(path_or_name)
    except Exception as exc:
        raise MeapDataError(
            f"tokenizer {path_or_name!r} is neither a tokenizer.json file nor a loadable hub name "
            f"({type(exc).__name__}: {exc}); pass a local path, or train one with "
            "'meap-data tokenizer train'"
        ) from exc


def _special_tokens(tok: Tokenizer) -> dict[str, int]:
    return {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}


def prepare_tokenizer(tok: Tokenizer, eos_token: str | None = None, mask_token: str = MASK_TOKEN,
                      add_bos: bool = False, bos_token: str | None = None) -> TokenizerInfo:
    """Ensure ``mask_token``, an end-of-document token (and with ``add_bos`` a
    beginning-of-document one) exist; return their ids. Logs what was added.

    ``eos_token``: use this token as end of document (added when absent); by default the
    first special token named like one (see :data:`EOS_CANDIDATES`), else ``<|endoftext|>``.
    ``bos_token``: likewise, from :data:`BOS_CANDIDATES`, else ``<|startoftext|>``.
    """
    specials = _special_tokens(tok)
    if eos_token is None:
        eos_token = next((c for c in EOS_CANDIDATES if c in specials), DEFAULT_EOS_TOKEN)
    if add_bos and bos_token is None:
        bos_token = next((c for c in BOS_CANDIDATES if c in specials), DEFAULT_BOS_TOKEN)
    wanted = [eos_token, mask_token] + ([bos_token] if add_bos else [])
    to_add = [t for t in wanted if tok.token_to_id(t) is None or t not in specials]
    before = tok.get_vocab_size(with_added_tokens=True)
    if to_add:
        tok.add_special_tokens(to_add)
    text = tok.to_str()
    eos_id = tok.token_to_id(eos_token)
    info = TokenizerInfo(
        json=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        mask_token=mask_token,
        mask_token_id=tok.token_to_id(mask_token),
        eos_token=eos_token,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token=bos_token if add_bos else None,
        bos_token_id=tok.token_to_id(bos_token) if add_bos else None,
        added_tokens=tuple(to_add),
    )
    if to_add:
        log.info("tokenizer: added %s; vocabulary %d -> %d tokens", ", ".join(
            f"{t} (id {tok.token_to_id(t)})" for t in to_add), before, info.vocab_size)
    return info


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE trained on ``texts``, with ``<|endoftext|>`` and ``[MASK]``.

    ``vocab_size``: target size in tokens, special tokens included (at least 300).
    """
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise MeapDataError(f"--vocab-size must be at least 300 (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[DEFAULT_EOS_TOKEN, MASK_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def iter_training_texts(documents: Iterable, max_chars: int) -> Iterator[str]:
    """Texts of the good documents, stopping after ``max_chars`` characters in all."""
    total = 0
    for doc in documents:
        text = getattr(doc, "text", None)
        if text is None:
            continue
        yield text
        total += len(text)
        if total >= max_chars:
            return


def split_for_encoding(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, to tokenize a huge document
    in bounded memory.

    Each cut falls where a run of whitespace starts after a non-whitespace character
    (``word| next``, ``x,|\\n    y``). Byte-level BPE pre-tokenizes with the GPT-2 pattern,
    whose pieces never run from a non-space into the spaces after it, and the run's own
    pieces depend only on what follows it; so the ids of the pieces, concatenated, are the
    ids of the whole text (tested on real text). A window with no such point (``max_chars
    / 2`` characters without whitespace) is cut at its end, where ids may differ.
    """
    pieces, start, n = [], 0, len(text)
    while n - start > max_chars:
        end = start + max_chars
        cut = None
        i = end
        floor = start + max_chars // 2
        while i > floor:
            i = max(text.rfind(" ", floor, i), text.rfind("\n", floor, i), text.rfind("\t", floor, i))
            if i <= floor:
                break
            if not text[i - 1].isspace():
                cut = i
                break
        cut = cut or end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces
