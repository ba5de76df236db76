"""The embedded demo data: real handwritten digits paired with template captions (NumPy only).

Sources are the 1,797 8x8 images of scikit-learn's bundled ``load_digits`` (read from the file
that ships inside scikit-learn: no download, and no import of scikit-learn, which takes seconds).
They are split by *source image*, stratified by class, into

* ``test`` (default 30% of sources): clean originals, for zero-shot accuracy and recall@1;
* ``curated`` (default 15%): clean originals (plus optional augmented copies), to train the
  reference model;
* ``pool`` (the rest): the "web" pool, ``augmentations`` shifted and noised copies of every
  source, of which a fraction ``corruption_rate`` is corrupted the way web data is: the caption
  of another class, a near-blank image, a heavily noised image, or an exact duplicate of another
  pool pair. :attr:`Split.corruption` records which, per example.

Every example is an image (float32, shape ``(n, 64)``: the 8x8 image flattened row-major, values
in ``[0, 1]``; ``images.reshape(-1, 8, 8)`` views it as images) and a caption (int32 token ids,
shape ``(n, seq_len)``, padded with 0; vocabulary in :mod:`jestcore.adapters.demo.text`). Everything
follows from a frozen :class:`DigitsConfig`; one config gives the same arrays on every machine.

Example:
    >>> data = make_digits(DigitsConfig(seed=0))
    >>> data.pool.images.shape[1], data.pool.tokens.dtype, data.prompts.shape
    (64, dtype('int32'), (10, 8))
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass

import numpy as np
from jestcore.adapters.demo.text import NUMBER_WORDS, tokenize
from jestcore.adapters.recipe import downsample

from jestcore import _validation as v

__all__ = [
    "CLEAN",
    "CORRUPTIONS",
    "DUPLICATE",
    "HEAVY_NOISE",
    "IMAGE_SIDE",
    "NEAR_BLANK",
    "PROMPT_TEMPLATE",
    "TEMPLATES",
    "WRONG_CAPTION",
    "Digits",
    "DigitsConfig",
    "Split",
    "class_prompts",
    "downsample",
    "load_sources",
    "make_digits",
]

#: Version of the construction; part of :meth:`DigitsConfig.fingerprint`.
DATASET_VERSION = 1

#: Side of the source images (8x8 pixels).
IMAGE_SIDE = 8

#: Names of the corruption codes in :attr:`Split.corruption`: ``CORRUPTIONS[code]``.
CORRUPTIONS: tuple[str, ...] = ("clean", "wrong_caption", "near_blank", "heavy_noise", "duplicate")
CLEAN, WRONG_CAPTION, NEAR_BLANK, HEAVY_NOISE, DUPLICATE = range(5)

#: Caption templates; ``{word}`` is the class name ("seven"), ``{numeral}`` its digit ("7").
TEMPLATES: tuple[str, ...] = (
    "a handwritten {word}",
    "the digit {numeral}",
    "a scan of the number {word}",
    "the number {word}",
    "a photo of the digit {numeral}",
    "a drawing of the number {numeral}",
    "a picture of a handwritten {word}",
    "an image of the digit {word}",
    "{word}",
    "{numeral}",
)

#: The template of the ten zero-shot class prompts in :attr:`Digits.prompts`.
PROMPT_TEMPLATE = TEMPLATES[0]

_MAX_CAPTION_WORDS = max(len(t.split()) for t in TEMPLATES)


def _caption(template: str, label: int) -> str:
    return template.format(word=NUMBER_WORDS[label], numeral=str(label))


def class_prompts(template: str = PROMPT_TEMPLATE, seq_len: int = 8) -> np.ndarray:
    """Token ids of the ten class prompts (row ``k`` names class ``k``), for zero-shot evaluation.

    Args:
        template: A caption with ``{word}`` and/or ``{numeral}`` fields, e.g. ``"the digit
            {numeral}"``.
        seq_len: Length of each row of token ids.

    Returns:
        An int32 array of shape ``(10, seq_len)``.

    Raises:
        TypeError: If ``template`` is not a str.
        ValueError: If ``template`` names neither field, or a prompt is longer than ``seq_len``.

    Example:
        >>> class_prompts("the digit {numeral}", 4)[7].tolist()
        [4, 7, 31, 0]
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    if "{word}" not in template and "{numeral}" not in template:
        raise ValueError(f"template must contain {{word}} or {{numeral}}, got {template!r}")
    return tokenize([_caption(template, k) for k in range(10)], seq_len)


@dataclass(frozen=True)
class DigitsConfig:
    """Everything that determines the digits dataset; validated on construction.

    Attributes:
        seed: Seed of every random choice (an int >= 0).
        test_fraction: Fraction of each class's source images held out for the test split.
        curated_fraction: Fraction of each class's source images in the curated split.
        augmentations: Augmented copies of every web source in the pool (>= 1).
        curated_augmentations: Augmented copies of every curated source added to its original
            (0: the curated split is the clean originals only).
        max_shift: Augmentations shift images by up to this many pixels on each axis (zero
            fill), uniformly in ``[-max_shift, max_shift]``.
        noise_std: Standard deviation of the Gaussian pixel noise of an augmentation (pixels are
            in ``[0, 1]`` and clipped back into it).
        corruption_rate: Fraction of pool pairs that are corrupted, in ``[0, 1)``: exactly
            ``round(corruption_rate * n)`` of the ``n`` pool pairs, but never all of them.
        corruption_mix: Shares of the corrupted pairs that are (wrong caption, near-blank image,
            heavily noised image, duplicate); non-negative, summing to 1.
        heavy_noise_std: Standard deviation of the noise added to a heavily noised image.
        blank_std: A near-blank image is ``clip(N(0, blank_std), 0, 1)`` per pixel.
        duplicate_copies: Duplicates copy this many per original on average: the duplicated
            pool pairs are spread evenly over ``ceil(n_duplicates / duplicate_copies)`` clean
            originals, as popular web content is copied many times.
        long_tail: Ratio of the most to the least frequent class among web sources (>= 1; 1
            keeps classes balanced). Class ``k`` keeps a fraction ``long_tail ** (-k / 9)`` of
            its web sources, so class 0 is the head and class 9 the tail. Test and curated
            splits stay balanced and do not depend on it.
        seq_len: Length of every row of caption token ids (at least the longest template).
    """

    seed: int = 0
    test_fraction: float = 0.30
    curated_fraction: float = 0.15
    augmentations: int = 24
    curated_augmentations: int = 0
    max_shift: int = 1
    noise_std: float = 0.1
    corruption_rate: float = 0.7
    corruption_mix: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)
    heavy_noise_std: float = 1.0
    blank_std: float = 0.05
    duplicate_copies: int = 8
    long_tail: float = 1.0
    seq_len: int = 8

    def __post_init__(self) -> None:
        v.check_int("seed", self.seed, low=0)
        _float("test_fraction", self.test_fraction, low=0.0, high=1.0, open_low=True)
        _float("curated_fraction", self.curated_fraction, low=0.0, high=1.0, open_low=True)
        if self.test_fraction + self.curated_fraction > 0.9:
            raise ValueError(
                "test_fraction + curated_fraction must be at most 0.9 (the rest is the web "
                f"pool), got {self.test_fraction} + {self.curated_fraction}"
            )
        v.check_int("augmentations", self.augmentations, low=1)
        v.check_int("curated_augmentations", self.curated_augmentations, low=0)
        v.check_int("max_shift", self.max_shift, low=0, high=IMAGE_SIDE - 1)
        _float("noise_std", self.noise_std, low=0.0)
        _float("corruption_rate", self.corruption_rate, low=0.0, high=1.0, open_high=True)
        mix = self.corruption_mix
        if not isinstance(mix, tuple) or len(mix) != 4:
            raise TypeError(
                "corruption_mix must be a tuple of 4 floats (wrong_caption, near_blank, "
                f"heavy_noise, duplicate), got {mix!r}"
            )
        for name, share in zip(CORRUPTIONS[1:], mix, strict=True):
            _float(f"corruption_mix[{name}]", share, low=0.0, high=1.0)
        if abs(sum(mix) - 1.0) > 1e-6:
            raise ValueError(f"corruption_mix must sum to 1, got {mix} (sum {sum(mix)})")
        _float("heavy_noise_std", self.heavy_noise_std, low=0.0, open_low=True)
        _float("blank_std", self.blank_std, low=0.0)
        v.check_int("duplicate_copies", self.duplicate_copies, low=1)
        _float("long_tail", self.long_tail, low=1.0)
        v.check_int("seq_len", self.seq_len, low=_MAX_CAPTION_WORDS)

    def fingerprint(self) -> str:
        """A hex digest of the config and the construction version (for caches keyed on data)."""
        payload = json.dumps(
            {"version": DATASET_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def _float(
    name: str,
    value: object,
    *,
    low: float,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    v = float(value)
    bad = (
        not math.isfinite(v)
        or v < low
        or (open_low and v == low)
        or (high is not None and (v > high or (open_high and v == high)))
    )
    if bad:
        lo = f"{low} <{'' if open_low else '='} {name}"
        hi = "" if high is None else f" <{'' if open_high else '='} {high}"
        raise ValueError(f"{name} must satisfy {lo}{hi}, got {value}")


@dataclass(frozen=True, eq=False)
class Split:
    """One split of image-caption pairs as plain NumPy arrays (row ``i`` is example ``i``).

    Attributes:
        images: float32 ``(n, 64)``: 8x8 images flattened row-major, values in ``[0, 1]``.
        tokens: int32 ``(n, seq_len)``: caption token ids, padded with 0.
        labels: int64 ``(n,)``: the class of the image's source digit.
        caption_labels: int64 ``(n,)``: the class the caption names (differs from ``labels``
            exactly for ``wrong_caption`` corruptions).
        example_ids: int64 ``(n,)``: stable, distinct ids within the split, ascending; in the
            pool ``slot_source * augmentations + copy`` (for the reference-embedding cache),
            where ``slot_source`` is the source the slot was grown from.
        source_ids: int64 ``(n,)``: index of the image's source in ``load_digits`` (for a
            duplicate, the source of the pair it copies).
        corruption: int8 ``(n,)``: a code into :data:`CORRUPTIONS` (0: clean; always 0 outside
            the pool).
        duplicate_of: int64 ``(n,)``: for a ``duplicate``, the example id of the pair it copies;
            -1 otherwise.
    """

    images: np.ndarray
    tokens: np.ndarray
    labels: np.ndarray
    caption_labels: np.ndarray
    example_ids: np.ndarray
    source_ids: np.ndarray
    corruption: np.ndarray
    duplicate_of: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def corruption_counts(self) -> dict[str, int]:
        """How many examples carry each corruption code, by name (including ``clean``)."""
        counts = np.bincount(self.corruption, minlength=len(CORRUPTIONS))
        return {name: int(c) for name, c in zip(CORRUPTIONS, counts, strict=True)}


@dataclass(frozen=True, eq=False)
class Digits:
    """The dataset: three splits, the zero-shot prompts and the config that built them.

    Attributes:
        config: The :class:`DigitsConfig`.
        pool: The large, partly corrupted "web" pool that the learner trains on.
        curated: The small clean split that the reference model trains on.
        test: The held-out clean split for evaluation.
        prompts: int32 ``(10, seq_len)``: token ids of :data:`PROMPT_TEMPLATE` for each class.
    """

    config: DigitsConfig
    pool: Split
    curated: Split
    test: Split
    prompts: np.ndarray

    def summary(self) -> dict[str, object]:
        """Split sizes and pool corruption counts, as plain Python values (JSON-ready)."""
        return {
            "fingerprint": self.config.fingerprint(),
            "sizes": {name: len(getattr(self, name)) for name in ("pool", "curated", "test")},
            "sources": {
                name: int(np.unique(getattr(self, name).source_ids).size)
                for name in ("pool", "curated", "test")
            },
            "pool_corruption": self.pool.corruption_counts(),
        }


def _sklearn_digits_file() -> str | None:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=1)
def _load_sources() -> tuple[np.ndarray, np.ndarray]:
    path = _sklearn_digits_file()
    if path is not None:
        with gzip.open(path) as f:
            raw = np.loadtxt(f, delimiter=",", dtype=np.float64)
        pixels, labels = raw[:, :-1], raw[:, -1]
    else:  # A scikit-learn that stores the file elsewhere: ask it (slower).
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.data, bunch.target
    images = (pixels / 16.0).astype(np.float32)
    images.flags.writeable = False
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def load_sources() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 source images of scikit-learn's ``load_digits`` and their labels.

    Returns:
        ``(images, labels)``: float32 ``(1797, 64)`` pixels scaled from 0..16 to ``[0, 1]``, and
        int64 ``(1797,)`` classes; fresh writable copies.

    Raises:
        ModuleNotFoundError: If scikit-learn is not installed.
    """
    images, labels = _load_sources()
    return images.copy(), labels.copy()


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per purpose, so changing one knob leaves other draws alone."""
    return np.random.default_rng([seed, stream])


_SPLIT, _POOL_AUG, _CORRUPT, _CURATED_AUG, _POOL_CAPTIONS, _CURATED_CAPTIONS, _TEST_CAPTIONS = (
    range(7)
)


def _split_sources(
    labels: np.ndarray, config: DigitsConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices of (pool, curated, test), stratified by class, each sorted."""
    rng = _rng(config.seed, _SPLIT)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_test = round(config.test_fraction * idx.size)
        n_cur = max(1, round(config.curated_fraction * idx.size))
        web = idx[n_test + n_cur :]
        keep = max(1, round(web.size * config.long_tail ** (-k / 9)))
        parts[0].append(web[:keep])
        parts[1].append(idx[n_test : n_test + n_cur])
        parts[2].append(idx[:n_test])
    pool, curated, test = (np.sort(np.concatenate(p)) for p in parts)
    return pool, curated, test


def _augment(
    images: np.ndarray, copies: int, config: DigitsConfig, rng: np.random.Generator
) -> np.ndarray:
    """``copies`` shifted (zero fill) and noised versions of each image, source-major."""
    n = images.shape[0]
    s, m = IMAGE_SIDE, config.max_shift
    padded = np.zeros((n, s + 2 * m, s + 2 * m), dtype=np.float32)
    padded[:, m : m + s, m : m + s] = images.reshape(n, s, s)
    shifts = rng.integers(-m, m + 1, size=(n, copies, 2))
    # Output pixel (r, c) reads input pixel (r - dy, c - dx): row m + r - dy of the padded image.
    rows = m + np.arange(s)[None, None, :] - shifts[:, :, :1]  # (n, copies, s)
    cols = m + np.arange(s)[None, None, :] - shifts[:, :, 1:]
    src = np.arange(n)[:, None, None, None]
    out = padded[src, rows[:, :, :, None], cols[:, :, None, :]].reshape(n * copies, s * s)
    out = out + rng.normal(0.0, config.noise_std, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def _captions(labels: np.ndarray, rng: np.random.Generator, seq_len: int) -> np.ndarray:
    """Token ids of a template drawn uniformly per example, naming ``labels``."""
    table = np.stack([class_prompts(t, seq_len) for t in TEMPLATES])  # (templates, 10, L)
    template = rng.integers(0, len(TEMPLATES), size=labels.shape[0])
    return np.asarray(table[template, labels])


def _clean_split(
    images: np.ndarray,
    labels: np.ndarray,
    sources: np.ndarray,
    copies_per_source: int,
    tokens: np.ndarray,
) -> Split:
    n = images.shape[0]
    return Split(
        images=images,
        tokens=tokens,
        labels=labels,
        caption_labels=labels.copy(),
        example_ids=(
            np.repeat(sources, copies_per_source) * copies_per_source
            + np.tile(np.arange(copies_per_source), sources.size)
        ),
        source_ids=np.repeat(sources, copies_per_source),
        corruption=np.zeros(n, dtype=np.int8),
        duplicate_of=np.full(n, -1, dtype=np.int64),
    )


def _shares(total: int, mix: tuple[float, ...]) -> list[int]:
    """``total`` split by ``mix`` into integers summing to ``total`` (largest remainder)."""
    raw = [total * w for w in mix]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(mix)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _corrupt(pool: Split, config: DigitsConfig) -> None:
    """Corrupts ``config.corruption_rate`` of the pool in place, recording each kind."""
    rng = _rng(config.seed, _CORRUPT)
    n = len(pool)
    n_bad = min(round(config.corruption_rate * n), n - 1)  # keep a clean pair to duplicate
    counts = _shares(n_bad, config.corruption_mix)
    order = rng.permutation(n)
    bounds = np.cumsum([0, *counts])
    chosen = {
        kind: np.sort(order[bounds[i] : bounds[i + 1]])
        for i, kind in enumerate((WRONG_CAPTION, NEAR_BLANK, HEAVY_NOISE, DUPLICATE))
    }
    clean = np.sort(order[n_bad:])

    idx = chosen[WRONG_CAPTION]
    wrong = (pool.labels[idx] + rng.integers(1, 10, size=idx.size)) % 10
    pool.caption_labels[idx] = wrong
    pool.tokens[idx] = _captions(wrong, rng, config.seq_len)

    idx = chosen[NEAR_BLANK]
    blank = rng.normal(0.0, config.blank_std, size=(idx.size, pool.images.shape[1]))
    pool.images[idx] = np.clip(blank, 0.0, 1.0)

    idx = chosen[HEAVY_NOISE]
    noise = rng.normal(0.0, config.heavy_noise_std, size=(idx.size, pool.images.shape[1]))
    pool.images[idx] = np.clip(pool.images[idx] + noise, 0.0, 1.0)

    idx = chosen[DUPLICATE]
    if idx.size:
        n_orig = min(clean.size, math.ceil(idx.size / config.duplicate_copies))
        originals = rng.choice(clean, size=n_orig, replace=False)
        src = originals[rng.permutation(np.arange(idx.size) % n_orig)]
        for name in ("images", "tokens", "labels", "caption_labels", "source_ids"):
            getattr(pool, name)[idx] = getattr(pool, name)[src]
        pool.duplicate_of[idx] = pool.example_ids[src]

    for kind, idx in chosen.items():
        pool.corruption[idx] = kind


def make_digits(config: DigitsConfig | None = None) -> Digits:
    """Builds the digits image-caption dataset of ``config`` (default :class:`DigitsConfig`).

    The same config gives the same arrays, bit for bit. Splits are disjoint at the level of
    source images; the pool is ordered by example id (shuffle when you sample).

    Args:
        config: The dataset's parameters; ``None`` for the defaults.

    Returns:
        The :class:`Digits` dataset.

    Raises:
        TypeError: If ``config`` is not a :class:`DigitsConfig`.

    Example:
        >>> data = make_digits()
        >>> sorted(data.summary()["sizes"].items())
        [('curated', 269), ('pool', 23736), ('test', 539)]
    """
    if config is None:
        config = DigitsConfig()
    if not isinstance(config, DigitsConfig):
        raise TypeError(f"config must be a DigitsConfig, got {type(config).__name__}")
    images, labels = _load_sources()
    pool_src, cur_src, test_src = _split_sources(labels, config)

    a = config.augmentations
    pool_labels = np.repeat(labels[pool_src], a)
    pool = _clean_split(
        _augment(images[pool_src], a, config, _rng(config.seed, _POOL_AUG)),
        pool_labels,
        pool_src,
        a,
        _captions(pool_labels, _rng(config.seed, _POOL_CAPTIONS), config.seq_len),
    )
    _corrupt(pool, config)

    c = config.curated_augmentations
    cur_images = images[cur_src]
    if c:
        extra = _augment(cur_images, c, config, _rng(config.seed, _CURATED_AUG))
        cur_images = np.concatenate(
            [cur_images[:, None], extra.reshape(cur_src.size, c, -1)], axis=1
        ).reshape(-1, IMAGE_SIDE * IMAGE_SIDE)
    cur_labels = np.repeat(labels[cur_src], c + 1)
    curated = _clean_split(
        cur_images,
        cur_labels,
        cur_src,
        c + 1,
        _captions(cur_labels, _rng(config.seed, _CURATED_CAPTIONS), config.seq_len),
    )

    test_labels = labels[test_src]
    test = _clean_split(
        images[test_src].copy(),
        test_labels.copy(),
        test_src,
        1,
        _captions(test_labels, _rng(config.seed, _TEST_CAPTIONS), config.seq_len),
    )
    return Digits(
        config=config,
        pool=pool,
        curated=curated,
        test=test,
        prompts=class_prompts(PROMPT_TEMPLATE, config.seq_len),
    )
