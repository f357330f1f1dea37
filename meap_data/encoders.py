"""Token encoders: many texts to token ids in one call, by Hugging Face ``tokenizers``
(the reference) or by ``fastokens`` (a Rust reimplementation of the same
``tokenizer.json`` models; tens of times faster on batches, and it returns every id in
one flat buffer instead of one Python object per document).

Both encode special-token text (``[MASK]`` written inside a document) as plain text, so
a raw document can never put the mask id among the clean labels. The fast backend is
used only after it reproduced the reference's ids (:func:`choose_backend`), so shards
are byte-identical whichever backend wrote them; which one ran is a fact of the run
(``run_info.json``), not of the dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import MeapDataError

log = logging.getLogger("meap_data")

BACKENDS = ("auto", "hf", "fastokens")
HF, FASTOKENS = "hf", "fastokens"

#: Texts every candidate backend must encode exactly as ``tokenizers`` does: code,
#: whitespace runs, scripts, combining marks, emoji sequences, compatibility characters,
#: control and zero-width characters, digits, very long words and special-token names
#: written as text (the tokenizer's own special tokens are added by :func:`self_check_texts`).
SELF_CHECK_TEXTS = (
    "",
    " ",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A(B, metaclass=M):\n\tpass\r\n",
    "fn main() {\n    let v: Vec<u8> = vec![1, 2, 3];\n    println!(\"{:?}\", v);\n}\n",
    "error[E0382]: borrow of moved value: `s`\n --> src/main.rs:4:20\n  |\n2 |     let s = String::new();\n",
    "Hello, world! It's a test; isn't it? I'm sure they'll've done it.",
    "héllo wörld façade naïve Ærøskøbing ﬁne ① Ⅻ ｆｕｌｌｗｉｄｔｈ ℌ",
    "日本語のテキスト、中文文本。한국어 텍스트 ภาษาไทย",
    "مرحبا بالعالم שלום עולם Привет, мир Γειά σου κόσμε",
    "a\u0301 e\u0301 n\u0303 \u1e9b\u0323 Å Å",
    "emoji 👩\u200d👩\u200d👧 🇫🇷 👍🏽 ❤️ 🦀",
    "\x00\x01\x7f ctrl \u200b zero\u200cwidth \ufeffbom \u2028 \u00a0nbsp",
    "    \t\t  spaces   \n\n\r\n  \n\t",
    "12345678901234567890 3.14159 1,000,000 0x7fff_ffff 1e-9",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" * 40,
    "x" * 3000 + " " + "é" * 1500,
    "[MASK] <|endoftext|> <s></s> [CLS][SEP] <|im_start|>user<|im_end|> <pad>",
    "https://example.com/a/b?c=d&e=f#g user@example.com C:\\path\\to\\file.txt",
    "\ud7ff\ue000\uffff",
)

#: Characters of the run's own documents checked before the fast backend is trusted.
RUN_SAMPLE_CHARS = 256 << 10
#: Added tokens written into the self-check texts (some tokenizers add hundreds).
MAX_CHECKED_ADDED_TOKENS = 64


class HfEncoder:
    """``tokenizers.Tokenizer``: the reference. ``encode_batch_fast`` skips character
    offsets (unused here): the same ids for about a third less CPU than ``encode_batch``."""

    name = HF

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.encode_special_tokens = True
        self._encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32 arrays) of each text, in order."""
        if not texts:
            return []
        return [np.asarray(e.ids, dtype=np.int32) for e in self._encode(list(texts), add_special_tokens=False)]

    def added_tokens(self) -> list[str]:
        """The added tokens' contents (special or not), by id."""
        return [t.content for _, t in sorted(self._tok.get_added_tokens_decoder().items())]


class FastokensEncoder:
    """``fastokens.Tokenizer``: ``encode_batch_flat`` returns every text's ids as one
    little-endian uint32 buffer with offsets, so no Python object is made per token or
    per document. Raises ``ImportError`` when the package is missing and ``ValueError``
    when it cannot run this tokenizer (e.g. an NFKC normalizer)."""

    name = FASTOKENS

    def __init__(self, tokenizer_json: str):
        import fastokens

        self._tok = fastokens.Tokenizer.from_json_str(tokenizer_json)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32 views of one buffer) of each text, in order."""
        if not texts:
            return []
        ids, offsets = self.encode_flat(texts)
        bounds = offsets.tolist()
        return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All ids (int32) concatenated, and ``len(texts) + 1`` offsets into them."""
        raw, offsets = self._tok.encode_batch_flat(list(texts), add_special_tokens=False, split_special_tokens=True)
        return np.frombuffer(raw, dtype="<u4").view(np.int32), np.frombuffer(offsets, dtype="<u8")


def build_encoder(tokenizer_json: str, backend: str):
    """The encoder ``backend`` (``hf`` or ``fastokens``) of a prepared tokenizer. Workers
    call this with the backend the driver chose; a worker without ``fastokens`` falls
    back to ``tokenizers`` (same ids: the driver checked) with a warning."""
    if backend == FASTOKENS:
        try:
            return FastokensEncoder(tokenizer_json)
        except Exception as exc:  # a worker image without the package, or another version
            log.warning("tokenizer backend: fastokens unavailable on this worker (%s: %s); using tokenizers",
                        type(exc).__name__, exc)
    return HfEncoder(tokenizer_json)


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses, why, and how much text the check compared."""

    backend: str
    requested: str
    reason: str
    checked_texts: int = 0
    checked_tokens: int = 0
    version: str | None = None

    def to_json(self) -> dict:
        return {"backend": self.backend, "requested": self.requested, "reason": self.reason,
                "checked_texts": self.checked_texts, "checked_tokens": self.checked_tokens,
                **({"fastokens_version": self.version} if self.version else {})}


def self_check_texts(special_tokens: Sequence[str] = ()) -> list[str]:
    """:data:`SELF_CHECK_TEXTS` plus the tokenizer's own special tokens written as text,
    alone, glued to words and between spaces."""
    texts = list(SELF_CHECK_TEXTS)
    for tok in special_tokens:
        texts += [tok, f"a{tok}b", f" {tok} ", f"{tok}\n{tok}"]
    return texts


def first_difference(candidate, reference, texts: Sequence[str]) -> str | None:
    """None when ``candidate`` encodes every text as ``reference`` does, else a line
    naming the first text (by index and opening characters) and token position that differ."""
    return _first_difference_in(candidate.encode(texts), reference.encode(texts), texts)


def _first_difference_in(got: list[np.ndarray], want: list[np.ndarray], texts: Sequence[str]) -> str | None:
    for i, (a, b) in enumerate(zip(got, want)):
        if len(a) != len(b) or not np.array_equal(a, b):
            at = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            return (f"text {i} ({texts[i][:40]!r}...) differs at token {at} "
                    f"({len(a)} tokens vs {len(b)} from tokenizers)")
    return None


def _fastokens_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("fastokens")
    except metadata.PackageNotFoundError:
        return None


def choose_backend(tokenizer_json: str, requested: str = "auto", run_sample: Sequence[str] = ()) -> BackendChoice:
    """The backend for a run. ``hf``: always ``tokenizers``. ``fastokens``: that one, or
    a :class:`MeapDataError` saying why it cannot be. ``auto``: ``fastokens`` when it is
    installed, loads this tokenizer and reproduces ``tokenizers``' ids on
    :func:`self_check_texts` (with the tokenizer's added tokens) and ``run_sample``
    (texts of the run's own documents), else ``tokenizers``, with the reason logged."""
    if requested not in BACKENDS:
        raise MeapDataError(f"--tokenizer-backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested == HF:
        return BackendChoice(HF, requested, "requested with --tokenizer-backend hf")
    reference = HfEncoder(tokenizer_json)
    texts = self_check_texts(reference.added_tokens()[:MAX_CHECKED_ADDED_TOKENS]) + list(run_sample)
    got: list[np.ndarray] = []
    try:
        got = FastokensEncoder(tokenizer_json).encode(texts)
        problem = _first_difference_in(got, reference.encode(texts), texts)
    except ImportError as exc:
        problem = f"fastokens is not installed ({exc}; pip install fastokens)"
    except Exception as exc:  # fastokens refuses models, normalizers and pre-tokenizers it lacks
        problem = f"fastokens cannot run this tokenizer: {type(exc).__name__}: {exc}"
    else:
        if problem is not None:
            problem = f"fastokens ids differ from tokenizers' on the self-check: {problem}"
    if problem is None:
        tokens = sum(len(ids) for ids in got)
        reason = (f"fastokens reproduced tokenizers' ids on {len(texts)} texts ({tokens} tokens: "
                  f"{len(texts) - len(run_sample)} self-check, {len(run_sample)} from this run's inputs)")
        log.info("tokenizer backend: %s", reason)
        return BackendChoice(FASTOKENS, requested, reason, len(texts), tokens, _fastokens_version())
    if requested == FASTOKENS:
        raise MeapDataError(f"--tokenizer-backend fastokens: {problem}; use --tokenizer-backend hf (or auto)")
    log.warning("tokenizer backend: using tokenizers, not fastokens: %s", problem)
    return BackendChoice(HF, requested, problem)
