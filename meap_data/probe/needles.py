"""Needles and the contexts they hide in.

A context is ``seq_len`` tokens: haystack text with ``n`` needles spliced in at token
boundaries, then a query that names one needle's key, then that needle's value (the
answer). Every piece (needle prefix, value, suffix, query prefix) is encoded on its own
and the ids are concatenated, so the answer's ids are exactly the ids the value has
inside its needle: retrieval is copying a span the model has seen.

Everything is a pure function of the numpy ``Generator`` it is given: the same seed
gives the same examples on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MeapDataError
from .haystack import Haystack

VARIANTS = ("kv", "pairs", "passkey", "natural")
_LETTERS = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))

_CITIES = (
    "Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Hanoi", "Porto", "Dakar", "Tbilisi", "Cusco",
    "Bergen", "Malaga", "Krakow", "Tallinn", "Adelaide", "Valparaiso", "Marrakesh", "Ljubljana", "Sapporo",
    "Halifax", "Cordoba", "Gdansk", "Bilbao", "Tromso", "Zanzibar", "Hobart", "Reykjavik", "Mombasa", "Perugia",
    "Salzburg", "Tucson", "Bruges", "Galway", "Essaouira", "Chiang Mai", "Antigua", "Trieste", "Nantes", "Aarhus",
)
_ACTIVITIES = (
    "to eat a sandwich in a sunny park", "to read old maps by the river", "to climb the hill at dawn",
    "to drink mint tea with strangers", "to ride a red bicycle along the coast", "to listen to a street choir",
    "to paint boats in the harbour", "to swim before breakfast", "to buy bread from the night bakery",
    "to walk the city walls at dusk", "to play chess under the bridge", "to count the bells at noon",
    "to fly a kite over the dunes", "to learn a folk dance in the square", "to sketch the cathedral doors",
    "to watch the tide come in", "to share soup at the market", "to row a small boat to the island",
    "to visit the tiny clock museum", "to feed the pigeons near the station", "to hike to the frozen lake",
    "to hunt for blue glass on the beach", "to sleep in a hammock by the lighthouse",
    "to try the spiced plum cake", "to photograph the green trams", "to sing in the old tunnel",
)


@dataclass(frozen=True)
class NeedleFormat:
    """How one variant writes its needles and queries (text; encoded by the probe)."""

    name: str
    default_needles: int

    def draw(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        """``n`` (key, value) pairs with distinct keys (and distinct values)."""
        if self.name == "natural":
            if n > len(_CITIES):
                raise MeapDataError(f"--needles {n}: the natural variant has {len(_CITIES)} distinct keys")
            keys = rng.choice(len(_CITIES), n, replace=False)
            values = rng.choice(len(_ACTIVITIES), n, replace=n > len(_ACTIVITIES))
            return [(_CITIES[k], _ACTIVITIES[v]) for k, v in zip(keys, values)]
        if self.name == "pairs":
            if n > 10:
                raise MeapDataError(f"--needles {n}: the pairs variant has 10 distinct one-digit values")
            keys, values = rng.choice(len(_LETTERS), n, replace=False), rng.choice(10, n, replace=False)
            return [(_LETTERS[k], str(v)) for k, v in zip(keys, values)]
        digits = 5 if self.name == "passkey" else 4
        low, high = 10 ** (digits - 1), 10 ** digits
        keys = rng.choice(high - low, n, replace=False) + low
        values = rng.choice(high - low, n, replace=False) + low
        return [(str(k), str(v)) for k, v in zip(keys, values)]

    def needle(self, key: str) -> tuple[str, str]:
        """(text before the value, text after it) of the needle for ``key``."""
        if self.name == "kv":
            return f"\nkey {key} holds ", ".\n"
        if self.name == "pairs":
            return f"\n{key}", "\n"
        if self.name == "passkey":
            return "\nThe pass key is ", ". Remember it.\n"
        return f"\nThe best thing to do in {key} is ", ".\n"

    def query(self, key: str) -> str:
        """The text after the haystack that the value must follow."""
        if self.name == "passkey":
            return "\nWhat is the pass key? The pass key is "
        return self.needle(key)[0]


FORMATS = {"kv": NeedleFormat("kv", 8), "pairs": NeedleFormat("pairs", 4), "passkey": NeedleFormat("passkey", 1), "natural": NeedleFormat("natural", 4)}


def needle_format(variant: str) -> NeedleFormat:
    if variant not in FORMATS:
        raise MeapDataError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return FORMATS[variant]


def describe(fmt: NeedleFormat, haystack: Haystack) -> str:
    """One line for the report: what a needle and its query look like, with token counts."""
    key, value = fmt.draw(np.random.default_rng(0), 1)[0]
    before, after = fmt.needle(key)
    needle, query = before + value + after, fmt.query(key)
    count = len(haystack.encode(before)) + len(haystack.encode(value)) + len(haystack.encode(after))
    return (f"variant {fmt.name}: needles like {needle!r} ({count} tokens), queried as {query!r} "
            f"-> {value!r} ({len(haystack.encode(value))} answer tokens)")


@dataclass
class Examples:
    """A batch of contexts. ``ids``: (B, seq_len) int32. Per row: ``answer_start`` (the
    answer's first position), ``answer_len`` (tokens), ``target_rank`` (0 when the
    queried needle is the first needle of the context), ``depth`` (where the target was
    put, 0 = start of the haystack, 1 = its end) and ``needles`` (how many)."""

    ids: np.ndarray
    answer_start: np.ndarray
    answer_len: np.ndarray
    target_rank: np.ndarray
    depth: np.ndarray
    needles: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> "Examples":
        return Examples(*(getattr(self, f)[index] for f in _FIELDS))

    @staticmethod
    def concat(parts: list["Examples"]) -> "Examples":
        return Examples(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("ids", "answer_start", "answer_len", "target_rank", "depth", "needles")


class ContextBuilder:
    """Builds contexts of ``seq_len`` tokens from ``stream`` (a haystack token stream)
    with ``n_needles`` needles of ``fmt``, encoding pieces with ``haystack``'s tokenizer
    (memoised: keys and values repeat). ``queries``: queries after the haystack; the
    first asks the target (the one scored), the others random needles (training contexts
    use several: more retrieval signal per context)."""

    def __init__(self, haystack: Haystack, stream: np.ndarray, fmt: NeedleFormat, seq_len: int, n_needles: int,
                 queries: int = 1):
        self.haystack, self.stream, self.fmt = haystack, stream, fmt
        self.seq_len, self.n_needles, self.queries = seq_len, n_needles, queries
        self._cache: dict[str, np.ndarray] = {}
        if n_needles < 1:
            raise MeapDataError(f"--needles must be at least 1, got {n_needles}")

    def _ids(self, text: str) -> np.ndarray:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self.haystack.encode(text)
        return ids

    def one(self, rng: np.random.Generator, depth: float | None = None) -> tuple[np.ndarray, int, int, int, float]:
        """(ids, answer_start, answer_len, target_rank, depth) of one context; ``depth``
        None draws it uniformly (training)."""
        pairs = self.fmt.draw(rng, self.n_needles)
        target = int(rng.integers(self.n_needles))
        needles = []
        for key, value in pairs:
            before, after = self.fmt.needle(key)
            needles.append(np.concatenate([self._ids(before), self._ids(value), self._ids(after)]))
        answer = self._ids(pairs[target][1])
        asked = [target] + [int(i) for i in rng.integers(0, self.n_needles, self.queries - 1)]
        query = np.concatenate([np.concatenate([self._ids(self.fmt.query(pairs[i][0])), self._ids(pairs[i][1])])
                                for i in asked])
        answer_start = self.seq_len - len(query) + len(self._ids(self.fmt.query(pairs[target][0])))
        hay_len = self.seq_len - sum(len(n) for n in needles) - len(query)
        if hay_len < self.n_needles or len(self.stream) <= hay_len:
            raise MeapDataError(f"--seq-len {self.seq_len} leaves {hay_len} haystack tokens for {self.n_needles} "
                                "needles; raise --seq-len or lower --needles")
        start = int(rng.integers(0, len(self.stream) - hay_len))
        hay = self.stream[start:start + hay_len]
        depth = float(rng.random()) if depth is None else float(depth)
        points = rng.integers(0, hay_len + 1, self.n_needles)
        points[target] = round(depth * hay_len)
        order = np.lexsort((rng.random(self.n_needles), points))  # ties broken at random
        parts, last = [], 0
        for i in order:
            parts += [hay[last:points[i]], needles[i]]
            last = points[i]
        parts += [hay[last:], query]
        ids = np.concatenate(parts).astype(np.int32)
        assert len(ids) == self.seq_len
        rank = int(np.flatnonzero(order == target)[0])
        return ids, answer_start, len(answer), rank, depth

    def batch(self, rng: np.random.Generator, size: int, depth: float | None = None) -> Examples:
        rows = [self.one(rng, depth) for _ in range(size)]
        return Examples(np.stack([r[0] for r in rows]), *(np.array([r[k] for r in rows]) for k in range(1, 5)),
                        np.full(size, self.n_needles))


def eval_set(builder: ContextBuilder, depths: tuple[float, ...], per_depth: int, seed: int) -> Examples:
    """``per_depth`` contexts at each depth, from the held-out stream builder: the same
    examples for every objective and seed (paired outcomes)."""
    parts = [builder.batch(np.random.default_rng([seed, 7, i]), per_depth, depth) for i, depth in enumerate(depths)]
    return Examples.concat(parts)
