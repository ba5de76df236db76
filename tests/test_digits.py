"""The embedded digits dataset and its tokenizer: invariants, determinism, corruption, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jestcore.adapters.demo import digits as D
from jestcore.adapters.demo.text import (
    NUMBER_WORDS,
    PAD_ID,
    UNK_ID,
    VOCAB,
    detokenize,
    tokenize,
)

SPLITS = ("pool", "curated", "test")


@pytest.fixture(scope="module")
def data() -> D.Digits:
    return D.make_digits()


@pytest.fixture(scope="module")
def sources() -> tuple[np.ndarray, np.ndarray]:
    return D.load_sources()


def named_class(caption: str) -> int:
    """Oracle: the class a caption names, read from its words."""
    found = [
        NUMBER_WORDS.index(w) if w in NUMBER_WORDS else int(w)
        for w in caption.split()
        if w in NUMBER_WORDS or w.isdigit()
    ]
    assert len(found) == 1, caption
    return found[0]


SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Oracle: flat 8x8 images moved by (dy, dx) pixels, zero fill (a literal pixel loop)."""
    grid = images.reshape(-1, 8, 8)
    out = np.zeros_like(grid)
    for r in range(8):
        for c in range(8):
            if 0 <= r - dy < 8 and 0 <= c - dx < 8:
                out[:, r, c] = grid[:, r - dy, c - dx]
    return out.reshape(-1, 64)


def best_shift_error(images: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Oracle: per image, the least mean squared error to any +-1 pixel shift of its original."""
    errors = [np.mean((images - shifted(originals, *s)) ** 2, axis=1) for s in SHIFTS]
    return np.min(errors, axis=0)


def check_invariants(data: D.Digits, sources: tuple[np.ndarray, np.ndarray]) -> None:
    """Everything every config must satisfy."""
    cfg = data.config
    images, labels = sources
    for name in SPLITS:
        s = getattr(data, name)
        n = len(s)
        assert n > 0
        assert s.images.dtype == np.float32 and s.images.shape == (n, 64)
        assert s.images.min() >= 0.0 and s.images.max() <= 1.0
        assert s.tokens.dtype == np.int32 and s.tokens.shape == (n, cfg.seq_len)
        for field in ("labels", "caption_labels", "example_ids", "source_ids", "duplicate_of"):
            arr = getattr(s, field)
            assert arr.dtype == np.int64 and arr.shape == (n,), field
        assert s.corruption.dtype == np.int8 and s.corruption.shape == (n,)
        assert np.all(np.diff(s.example_ids) > 0), "ids must be distinct and ascending"
        # Captions name caption_labels; they equal labels except for wrong-caption pairs.
        named = np.array([named_class(c) for c in detokenize(s.tokens)])
        np.testing.assert_array_equal(named, s.caption_labels)
        wrong = s.corruption == D.WRONG_CAPTION
        np.testing.assert_array_equal(s.caption_labels[~wrong], s.labels[~wrong])
        assert np.all(s.caption_labels[wrong] != s.labels[wrong])
        np.testing.assert_array_equal(s.labels, labels[s.source_ids])
        if name != "pool":
            assert np.all(s.corruption == D.CLEAN) and np.all(s.duplicate_of == -1)
    # Disjoint at the source level.
    src = [set(getattr(data, name).source_ids.tolist()) for name in SPLITS]
    assert not (src[0] & src[1]) and not (src[0] & src[2]) and not (src[1] & src[2])
    # Test images are the untouched originals.
    np.testing.assert_array_equal(data.test.images, images[data.test.source_ids])
    # Corruption counts: exactly round(rate * n) corrupted, each kind within one of its share.
    pool = data.pool
    n = len(pool)
    counts = pool.corruption_counts()
    n_bad = n - counts["clean"]
    assert n_bad == min(round(cfg.corruption_rate * n), n - 1)
    for kind, share in zip(D.CORRUPTIONS[1:], cfg.corruption_mix, strict=True):
        assert abs(counts[kind] - share * n_bad) <= 1, (kind, counts)
    # Duplicates are exact copies of clean pairs, spread over ceil(n_dup / copies) originals.
    dup = np.flatnonzero(pool.corruption == D.DUPLICATE)
    assert np.all(pool.duplicate_of[pool.corruption != D.DUPLICATE] == -1)
    if dup.size:
        orig = np.searchsorted(pool.example_ids, pool.duplicate_of[dup])
        np.testing.assert_array_equal(pool.example_ids[orig], pool.duplicate_of[dup])
        assert np.all(pool.corruption[orig] == D.CLEAN)
        for field in ("images", "tokens", "labels", "caption_labels", "source_ids"):
            np.testing.assert_array_equal(getattr(pool, field)[dup], getattr(pool, field)[orig])
        n_clean = counts["clean"]
        assert np.unique(orig).size == min(n_clean, math.ceil(dup.size / cfg.duplicate_copies))


def test_default_invariants(data: D.Digits, sources: tuple[np.ndarray, np.ndarray]) -> None:
    check_invariants(data, sources)


def test_default_sizes(data: D.Digits) -> None:
    # 1,797 sources, stratified: ~30% test, ~15% curated, the rest x 24 augmentations.
    summary = data.summary()
    assert summary["sources"] == {"pool": 989, "curated": 269, "test": 539}
    assert summary["sizes"] == {"pool": 989 * 24, "curated": 269, "test": 539}
    assert sum(summary["sources"].values()) == 1797
    json.dumps(summary)  # JSON-ready


def test_split_fractions_per_class(data: D.Digits, sources: tuple[np.ndarray, np.ndarray]) -> None:
    per_class = np.bincount(sources[1], minlength=10)
    for name, frac in (("test", 0.30), ("curated", 0.15)):
        got = np.bincount(getattr(data, name).labels, minlength=10)
        assert np.all(np.abs(got - frac * per_class) <= 0.5 + 1e-9), name


def test_sources_match_sklearn(sources: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    np.testing.assert_array_equal(sources[0], (bunch.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(sources[1], bunch.target)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32),
    rate=st.floats(0.0, 0.95),
    mix=st.lists(st.integers(0, 5), min_size=4, max_size=4).filter(lambda m: sum(m) > 0),
    augmentations=st.integers(1, 4),
    curated_aug=st.integers(0, 2),
    copies=st.integers(1, 20),
    long_tail=st.floats(1.0, 20.0),
    test_fraction=st.floats(0.05, 0.5),
)
def test_invariants_hold_for_any_config(
    sources: tuple[np.ndarray, np.ndarray],
    seed: int,
    rate: float,
    mix: list[int],
    augmentations: int,
    curated_aug: int,
    copies: int,
    long_tail: float,
    test_fraction: float,
) -> None:
    cfg = D.DigitsConfig(
        seed=seed,
        corruption_rate=rate,
        corruption_mix=tuple(m / sum(mix) for m in mix),
        augmentations=augmentations,
        curated_augmentations=curated_aug,
        duplicate_copies=copies,
        long_tail=long_tail,
        test_fraction=test_fraction,
    )
    check_invariants(D.make_digits(cfg), sources)


def test_deterministic_per_seed() -> None:
    a, b = D.make_digits(D.DigitsConfig(seed=3)), D.make_digits(D.DigitsConfig(seed=3))
    for name in SPLITS:
        for field in D.Split.__dataclass_fields__:
            np.testing.assert_array_equal(
                getattr(getattr(a, name), field), getattr(getattr(b, name), field)
            )


def test_seeds_differ(data: D.Digits) -> None:
    other = D.make_digits(D.DigitsConfig(seed=1))
    assert not np.array_equal(data.test.source_ids, other.test.source_ids)
    assert not np.array_equal(data.pool.corruption, other.pool.corruption[: len(data.pool)])
    assert data.config.fingerprint() != other.config.fingerprint()


def test_knobs_leave_other_draws_alone(data: D.Digits) -> None:
    # Corruption and long tail do not move the test or curated splits, nor the pool's ids.
    for cfg in (D.DigitsConfig(corruption_rate=0.3), D.DigitsConfig(long_tail=5.0)):
        other = D.make_digits(cfg)
        for name in ("test", "curated"):
            np.testing.assert_array_equal(getattr(data, name).images, getattr(other, name).images)
            np.testing.assert_array_equal(getattr(data, name).tokens, getattr(other, name).tokens)
    other = D.make_digits(D.DigitsConfig(corruption_rate=0.3))
    np.testing.assert_array_equal(data.pool.example_ids, other.pool.example_ids)
    both_clean = (data.pool.corruption == 0) & (other.pool.corruption == 0)
    assert both_clean.sum() > 1000
    np.testing.assert_array_equal(data.pool.images[both_clean], other.pool.images[both_clean])


def test_pool_example_ids(data: D.Digits) -> None:
    a = data.config.augmentations
    own = data.pool.corruption != D.DUPLICATE
    np.testing.assert_array_equal(data.pool.example_ids[own] // a, data.pool.source_ids[own])
    np.testing.assert_array_equal(
        data.pool.example_ids % a, np.tile(np.arange(a), len(data.pool) // a)
    )


def test_augmentations_are_shifts_of_the_source(sources: tuple[np.ndarray, np.ndarray]) -> None:
    cfg = D.DigitsConfig(noise_std=0.0, corruption_rate=0.0, augmentations=30)
    pool = D.make_digits(cfg).pool
    originals = sources[0][pool.source_ids]
    match = np.stack(
        [np.all(pool.images == shifted(originals, *s), axis=1) for s in SHIFTS], axis=1
    )
    assert np.all(match.any(axis=1)), "every pool image is a shift of its source"
    # Every shift is used, about equally often (an image may match several shifts).
    first = np.argmax(match, axis=1)
    assert np.all(np.bincount(first, minlength=9) > 0.5 * len(pool) / 9 / 2)


def test_augmentation_noise_level(data: D.Digits, sources: tuple[np.ndarray, np.ndarray]) -> None:
    # Clean pool images are a shift of the source plus clipped N(0, 0.1) noise: the best shift
    # leaves a residual of at most the noise variance 0.01 (clipping only shrinks it).
    pool = data.pool
    clean = pool.corruption == D.CLEAN
    best = best_shift_error(pool.images[clean], sources[0][pool.source_ids[clean]])
    assert 0.002 < np.mean(best) < 0.01


def test_image_corruptions(data: D.Digits, sources: tuple[np.ndarray, np.ndarray]) -> None:
    pool = data.pool
    blank = pool.images[pool.corruption == D.NEAR_BLANK]
    clean = pool.images[pool.corruption == D.CLEAN]
    noisy = pool.corruption == D.HEAVY_NOISE
    assert blank.mean() < 0.05 and blank.max() <= 0.05 * 6
    assert clean.mean() > 0.25
    # Heavily noised images are far from every shift of their source, clean ones close.
    err = best_shift_error(pool.images, sources[0][pool.source_ids])
    assert np.mean(err[noisy]) > 0.1
    assert np.all(err[pool.corruption == D.CLEAN] < 0.02)


def test_wrong_captions_use_every_other_class(data: D.Digits) -> None:
    pool = data.pool
    wrong = pool.corruption == D.WRONG_CAPTION
    offsets = (pool.caption_labels[wrong] - pool.labels[wrong]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0
    expected = wrong.sum() / 9
    assert np.all(np.abs(counts[1:] - expected) < 5 * math.sqrt(expected))


def test_long_tail(data: D.Digits) -> None:
    other = D.make_digits(D.DigitsConfig(long_tail=10.0))
    counts = np.bincount(other.pool.labels[other.pool.corruption == D.CLEAN], minlength=10)
    sources = np.bincount(other.pool.labels[:: other.config.augmentations], minlength=10)
    assert np.all(np.diff(sources) < 0)
    assert 8.5 < sources[0] / sources[9] < 11.5
    assert counts[0] > 5 * counts[9]
    np.testing.assert_array_equal(data.test.source_ids, other.test.source_ids)


def test_curated_augmentations(sources: tuple[np.ndarray, np.ndarray]) -> None:
    base = D.make_digits(D.DigitsConfig(seed=2))
    aug = D.make_digits(D.DigitsConfig(seed=2, curated_augmentations=3)).curated
    assert len(aug) == 4 * len(base.curated)
    np.testing.assert_array_equal(np.unique(aug.source_ids), base.curated.source_ids)
    # Copy 0 of every source is its original.
    first = aug.example_ids % 4 == 0
    np.testing.assert_array_equal(aug.images[first], sources[0][aug.source_ids[first]])
    assert not np.array_equal(aug.images[~first], sources[0][aug.source_ids[~first]])
    np.testing.assert_array_equal(aug.example_ids // 4, aug.source_ids)


def test_prompts(data: D.Digits) -> None:
    assert data.prompts.dtype == np.int32 and data.prompts.shape == (10, 8)
    assert detokenize(data.prompts) == [f"a handwritten {w}" for w in NUMBER_WORDS]
    numerals = D.class_prompts("the digit {numeral}", 5)
    assert detokenize(numerals) == [f"the digit {k}" for k in range(10)]
    with pytest.raises(ValueError, match="template"):
        D.class_prompts("a digit")
    with pytest.raises(TypeError, match="template"):
        D.class_prompts(3)  # type: ignore[arg-type]


def test_templates_fit_and_name_one_class() -> None:
    for template in D.TEMPLATES:
        for k in range(10):
            text = template.format(word=NUMBER_WORDS[k], numeral=k)
            assert named_class(text) == k
            assert len(text.split()) <= D.DigitsConfig().seq_len


def test_tokenizer_round_trip_and_vocab() -> None:
    assert VOCAB[PAD_ID] == "<pad>" and VOCAB[UNK_ID] == "<unk>"
    assert len(set(VOCAB)) == len(VOCAB)
    texts = ["a scan of the number seven", "the digit 3", "Nine"]
    tokens = tokenize(texts, 7)
    assert tokens.dtype == np.int32 and tokens.shape == (3, 7)
    assert detokenize(tokens) == ["a scan of the number seven", "the digit 3", "nine"]
    assert tokens[2, 1:].tolist() == [PAD_ID] * 6
    assert tokenize(["a zebra"], 2).tolist() == [[VOCAB.index("a"), UNK_ID]]
    assert tokenize([], 3).shape == (0, 3)


@pytest.mark.parametrize(
    ("texts", "seq_len", "error", "match"),
    [
        ("a seven", 4, TypeError, "single str"),
        (["a seven", 7], 4, TypeError, r"texts\[1\]"),
        (["a seven"], 1.5, TypeError, "seq_len"),
        (["a seven"], 0, ValueError, "seq_len"),
        (["a b c d e"], 4, ValueError, r"texts\[0\] has 5 words"),
    ],
)
def test_tokenize_errors(texts, seq_len, error, match) -> None:
    with pytest.raises(error, match=match):
        tokenize(texts, seq_len)


def test_detokenize_errors() -> None:
    with pytest.raises(TypeError, match="integer"):
        detokenize(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="2-D"):
        detokenize(np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match="ids in"):
        detokenize(np.array([[len(VOCAB)]]))


def test_downsample_matches_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, 64)).astype(np.float32)
    expected = np.zeros((5, 4, 4))
    for n in range(5):
        for r in range(4):
            for c in range(4):
                expected[n, r, c] = (
                    images[n].reshape(8, 8)[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean()
                )
    flat = D.downsample(images)
    assert flat.dtype == np.float32 and flat.shape == (5, 16)
    np.testing.assert_allclose(
        flat.reshape(5, 4, 4), expected, rtol=4 * np.sqrt(np.finfo(np.float32).eps)
    )
    square = D.downsample(images.reshape(5, 8, 8))
    assert square.shape == (5, 4, 4)
    np.testing.assert_array_equal(square.reshape(5, 16), flat)
    np.testing.assert_array_equal(D.downsample(images, 1), images)
    assert D.downsample(images, 8).shape == (5, 1)
    assert D.downsample(np.ones((2, 16), dtype=np.int64), 2).dtype == np.float32


@pytest.mark.parametrize(
    ("images", "factor", "error", "match"),
    [
        (np.zeros((2, 60)), 2, ValueError, "square"),
        (np.zeros((2, 6, 6)), 4, ValueError, "divisible"),
        (np.zeros((2, 8, 4)), 2, ValueError, "shape"),
        (np.zeros(64), 2, ValueError, "shape"),
        (np.zeros((2, 64)), 0, ValueError, "factor"),
        (np.zeros((2, 64)), 2.0, TypeError, "factor"),
        (np.zeros((2, 64), dtype=bool), 2, TypeError, "images"),
    ],
)
def test_downsample_errors(images, factor, error, match) -> None:
    with pytest.raises(error, match=match):
        D.downsample(images, factor)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"test_fraction": 1.2}, ValueError, "test_fraction"),
        ({"test_fraction": "0.3"}, TypeError, "test_fraction"),
        ({"curated_fraction": 0.7}, ValueError, "test_fraction \\+ curated_fraction"),
        ({"augmentations": 0}, ValueError, "augmentations"),
        ({"curated_augmentations": -1}, ValueError, "curated_augmentations"),
        ({"max_shift": 8}, ValueError, "max_shift"),
        ({"noise_std": -0.1}, ValueError, "noise_std"),
        ({"noise_std": float("nan")}, ValueError, "noise_std"),
        ({"corruption_rate": 1.0}, ValueError, "corruption_rate"),
        ({"corruption_mix": [0.4, 0.2, 0.2, 0.2]}, TypeError, "corruption_mix"),
        ({"corruption_mix": (0.5, 0.5)}, TypeError, "corruption_mix"),
        ({"corruption_mix": (0.5, 0.5, 0.5, 0.5)}, ValueError, "sum to 1"),
        ({"corruption_mix": (0.8, -0.2, 0.2, 0.2)}, ValueError, "near_blank"),
        ({"heavy_noise_std": 0.0}, ValueError, "heavy_noise_std"),
        ({"blank_std": -1.0}, ValueError, "blank_std"),
        ({"duplicate_copies": 0}, ValueError, "duplicate_copies"),
        ({"long_tail": 0.5}, ValueError, "long_tail"),
        ({"long_tail": float("inf")}, ValueError, "long_tail"),
        ({"seq_len": 5}, ValueError, "seq_len"),
    ],
)
def test_config_validation(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        D.DigitsConfig(**kwargs)


def test_make_digits_errors() -> None:
    with pytest.raises(TypeError, match="DigitsConfig"):
        D.make_digits({"seed": 0})  # type: ignore[arg-type]


def test_one_clean_pair_is_always_left(sources: tuple[np.ndarray, np.ndarray]) -> None:
    # round(0.999 * n) = n for this small pool: one pair stays clean, for duplicates to copy.
    cfg = D.DigitsConfig(corruption_rate=0.999, augmentations=1, long_tail=1000.0)
    data = D.make_digits(cfg)
    assert round(0.999 * len(data.pool)) == len(data.pool)
    assert data.pool.corruption_counts()["clean"] == 1
    check_invariants(data, sources)


def test_config_is_frozen_and_fingerprint_stable() -> None:
    cfg = D.DigitsConfig()
    with pytest.raises(AttributeError):
        cfg.seed = 2  # type: ignore[misc]
    assert cfg.fingerprint() == D.DigitsConfig().fingerprint()
    assert cfg.fingerprint() != D.DigitsConfig(noise_std=0.2).fingerprint()
    assert len(cfg.fingerprint()) == 64
