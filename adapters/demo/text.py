"""A tiny fixed-vocabulary tokenizer for the digit captions (NumPy only).

The vocabulary is fixed and small, so token ids are stable across versions and machines:

====  ==========================================================================
ids   tokens
====  ==========================================================================
0     ``<pad>`` (padding; :data:`PAD_ID`)
1     ``<unk>`` (any word outside the vocabulary; :data:`UNK_ID`)
2-13  ``a an the of handwritten digit number scan photo drawing picture image``
14-23 ``zero one two three four five six seven eight nine``
24-33 ``0 1 2 3 4 5 6 7 8 9``
====  ==========================================================================

Text is lower-cased and split on whitespace; each word becomes one token; sequences are
right-padded with :data:`PAD_ID` to a fixed length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "NUMBER_WORDS",
    "PAD_ID",
    "UNK_ID",
    "VOCAB",
    "detokenize",
    "tokenize",
]

#: English names of the ten digits, by class.
NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

_FUNCTION_WORDS = (
    "a",
    "an",
    "the",
    "of",
    "handwritten",
    "digit",
    "number",
    "scan",
    "photo",
    "drawing",
    "picture",
    "image",
)

#: The vocabulary: ``VOCAB[token_id]`` is the token's text.
VOCAB: tuple[str, ...] = (
    "<pad>",
    "<unk>",
    *_FUNCTION_WORDS,
    *NUMBER_WORDS,
    *(str(k) for k in range(10)),
)

#: Id of the padding token.
PAD_ID = 0
#: Id of the unknown-word token.
UNK_ID = 1

_INDEX = {token: i for i, token in enumerate(VOCAB)}


def tokenize(texts: Sequence[str], seq_len: int) -> np.ndarray:
    """Token ids of ``texts``, right-padded with :data:`PAD_ID` to ``seq_len``.

    Args:
        texts: Strings (a single ``str`` is refused, to avoid tokenizing its characters).
        seq_len: Length of every row; a text with more words is an error.

    Returns:
        An int32 array of shape ``(len(texts), seq_len)``.

    Raises:
        TypeError: If ``texts`` is a ``str`` or holds a non-string, or ``seq_len`` is not an int.
        ValueError: If ``seq_len < 1`` or a text has more than ``seq_len`` words.

    Example:
        >>> tokenize(["a handwritten seven"], 5).tolist()
        [[2, 6, 21, 0, 0]]
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got a single str")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer):
        raise TypeError(f"seq_len must be an int, got {seq_len!r}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    texts = list(texts)
    out = np.full((len(texts), int(seq_len)), PAD_ID, dtype=np.int32)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}")
        words = text.lower().split()
        if len(words) > seq_len:
            raise ValueError(
                f"texts[{row}] has {len(words)} words, more than seq_len = {seq_len}: {text!r}"
            )
        out[row, : len(words)] = [_INDEX.get(w, UNK_ID) for w in words]
    return out


def detokenize(tokens: np.ndarray) -> list[str]:
    """The texts of rows of token ids (padding dropped); the inverse of :func:`tokenize`.

    Args:
        tokens: An integer array of shape ``(n, seq_len)`` with ids in ``[0, len(VOCAB))``.

    Returns:
        ``n`` strings, words joined by single spaces.

    Raises:
        TypeError: If ``tokens`` is not an integer array.
        ValueError: If ``tokens`` is not 2-D or holds an id outside the vocabulary.

    Example:
        >>> detokenize(tokenize(["the digit 7"], 4))
        ['the digit 7']
    """
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be an integer array, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D (n, seq_len), got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= len(VOCAB)):
        raise ValueError(
            f"tokens must hold ids in [0, {len(VOCAB)}), got {tokens.min()}..{tokens.max()}"
        )
    return [" ".join(VOCAB[i] for i in row if i != PAD_ID) for row in tokens.tolist()]
