"""Molecule representations: SELFIES or SMILES strings as sequences of token ids.

SELFIES (the default) decodes every token string to *some* molecule, so validity is
free; what a model must learn is the right size and ring structure. A SELFIES branch
or ring symbol is followed by one to three symbols that SELFIES reads as a number (the
branch length or ring offset). Read apart from their symbol those index symbols look
like atoms, so a model that puts them in the wrong place changes the molecule's size.
With ``group_indices`` (the default) a structural symbol and its index symbols form one
token (``[Ring1][=C]``): the sequence is shorter and every token means one thing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import selfies as sf

PAD, MASK = "<pad>", "<mask>"
SPECIALS = (PAD, MASK)
PAD_ID, MASK_ID = 0, 1

# The usual SMILES regex (Schwaller et al. 2019): bracket atoms, two-letter halogens, ring-bond labels.
SMILES_PATTERN = re.compile(r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])")
_STRUCTURAL = re.compile(r"^\[[=#/\\-]?(Branch|Ring)([123])\]$")

Representation = Literal["selfies", "smiles"]


class TokenError(ValueError):
    """A molecule cannot be written with this tokenizer (encoding failed, or an unknown token)."""


def split_selfies(selfies: str, group_indices: bool) -> list[str]:
    symbols = list(sf.split_selfies(selfies))
    if not group_indices:
        return symbols
    tokens: list[str] = []
    i = 0
    while i < len(symbols):
        m = _STRUCTURAL.match(symbols[i])
        n = int(m.group(2)) if m else 0
        tokens.append("".join(symbols[i : i + 1 + n]))
        i += 1 + n
    return tokens


class Tokenizer:
    """Turns canonical SMILES into token ids and back.

    ``tokens`` is the vocabulary, specials first (``<pad>`` = 0, ``<mask>`` = 1).
    """

    def __init__(self, representation: Representation, tokens: list[str], group_indices: bool = True):
        if list(tokens[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("vocabulary must start with the special tokens")
        self.representation = representation
        self.group_indices = group_indices
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    # -- strings <-> token strings ------------------------------------------------
    def split(self, smiles: str) -> list[str]:
        if self.representation == "smiles":
            pieces = SMILES_PATTERN.findall(smiles)
            if "".join(pieces) != smiles:
                raise TokenError(f"cannot tokenize SMILES {smiles!r}")
            return pieces
        try:
            encoded = sf.encoder(smiles)
        except sf.EncoderError as exc:  # e.g. hypervalent atoms SELFIES' constraints reject
            raise TokenError(f"SELFIES cannot encode {smiles!r}: {exc}") from None
        if encoded is None:
            raise TokenError(f"SELFIES cannot encode {smiles!r}")
        return split_selfies(encoded, self.group_indices)

    def join(self, pieces: Iterable[str]) -> str:
        text = "".join(pieces)
        if self.representation == "smiles":
            return text
        try:
            return sf.decoder(text) or ""
        except sf.DecoderError:
            return ""

    # -- ids ----------------------------------------------------------------------
    def encode(self, smiles: str) -> list[int]:
        ids = []
        for piece in self.split(smiles):
            if piece not in self.index:
                raise TokenError(f"token {piece!r} is not in the vocabulary")
            ids.append(self.index[piece])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.join(self.tokens[i] for i in ids if i >= len(SPECIALS))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def to_dict(self) -> dict:
        return {"representation": self.representation, "group_indices": self.group_indices, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        return cls(d["representation"], d["tokens"], d.get("group_indices", True))

    @classmethod
    def fit(
        cls,
        pieces_per_molecule: Iterable[list[str]],
        representation: Representation,
        group_indices: bool = True,
        min_count: int = 1,
    ) -> Tokenizer:
        counts = Counter(p for pieces in pieces_per_molecule for p in pieces)
        vocab = sorted(t for t, c in counts.items() if c >= min_count)
        return cls(representation, list(SPECIALS) + vocab, group_indices)
