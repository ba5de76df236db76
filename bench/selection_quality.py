"""Selection quality: how close does blocked joint sampling get to the best batch?

For super-batches of contrastive embeddings this measures the joint score
``sum_{i, j in B} S_ij`` (:func:`jestcore.batch_score`) of the batch ``B`` chosen by

* uniform random selection (and its exact expectation),
* independent selection on the diagonal ``S_ii``: sampled, and top-k,
* joint selection (:func:`jestcore.joint_select`) with 1, 2, 4, ..., 32 chunks, sampled and greedy,
* sampled at the library's default score gain (100, the paper's recipe: ``--gain``) and at
  the gains of ``--compare-gains`` (default 1, Algorithm 1 as printed), labelled
  ``"joint (sampled, gain=1)"``,
* the best achievable batch: exact (exhaustive search) on small super-batches, and on larger ones
  a lower bound of the optimum found by steepest-ascent swap search from many starts (every
  method's batch, the one-at-a-time greedy batch, random batches) followed by iterated local
  search (random kicks, re-descend, keep the best).

The batch size ``b`` is fixed and the super-batch is ``N = b / (1 - f)`` for each filter ratio
``f``, as in the paper. Each score is also reported *normalised*, ``(s - E) / (best - E)``, where
``E`` is the exact expected score of a uniform random batch: 0 is chance, 1 the best found.

Data: (a) synthetic contrastive embeddings with hard-negative structure (see
:func:`hard_negative_superbatch`); (b) with ``--embeddings PATH.npz``, super-batches drawn from
real learner/reference embeddings (arrays ``learner_image``, ``learner_text``, ``learner_scale``,
``learner_bias`` and the same four for ``reference_``).

Run ``python bench/selection_quality.py`` (about 3 minutes on 2 cores) or ``--quick`` (seconds).
Prints tables and writes ``bench/results/selection_quality.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import jestcore

RESULTS = Path(__file__).resolve().parent / "results"
FILTER_RATIOS = (0.5, 0.8, 0.9)
#: Chunk counts of joint selection; "b" means one item per chunk (n_chunks = batch size).
N_CHUNKS = ("1", "2", "4", "8", "16", "32", "b")
#: The score gain of the "sampled" rows (the library's default, the paper's recipe).
GAIN = 100.0
#: Further gains of sampled selection to compare (Algorithm 1 as printed).
COMPARE_GAINS = (1.0,)
#: Largest number of subsets the exhaustive search enumerates.
MAX_SUBSETS = 5_000_000


# ----------------------------------------------------------------------------- data


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class SuperBatch:
    """Learner and reference embeddings of one super-batch (float64), and what was planted.

    Attributes:
        learner: The learner's embeddings.
        reference: The reference model's embeddings.
        kind: ``(N,)`` per-pair label: ``"learnt"``, ``"hard"`` (a near-duplicate cluster the
            learner cannot yet tell apart), ``"unlearnt"``; ``"mismatched"`` overrides; empty
            strings for real embeddings.
        cluster: ``(N,)`` near-duplicate cluster of each pair's image (-1 for real embeddings).
    """

    learner: jestcore.PairEmbeddings
    reference: jestcore.PairEmbeddings
    kind: np.ndarray
    cluster: np.ndarray


def hard_negative_superbatch(
    n: int,
    *,
    dim: int = 64,
    mean_cluster: float = 6.0,
    p_hard: float = 0.25,
    p_unlearnt: float = 0.25,
    mismatch_rate: float = 0.15,
    seed: int = 0,
) -> SuperBatch:
    """Synthetic image-text pairs in clusters of near-duplicate captions, some mismatched.

    Pairs come in clusters (geometric sizes, mean ``mean_cluster``) that share a coarse concept
    and differ in a fine detail (cosine about 0.4 between cluster mates). The reference model
    resolves the details. Per cluster, the learner has either

    * ``learnt`` it: its embeddings are the reference's plus a little noise (scores near 0);
    * not ``learnt`` it (``unlearnt``, probability ``p_unlearnt``): it embeds the images almost at
      random, so each pair alone is learnable (``S_ii`` about +2) while mates, which the
      reference keeps apart at some cost, score negatively together (``S_ij`` about -0.35);
    * only the coarse concept (``hard``, probability ``p_hard``): mates collapse onto one point
      for the learner, with a random per-cluster residual resolution and noise. Each pair alone
      is nearly learnt (``S_ii`` small) but mates are hard negatives of each other: ``S_ij`` is
      positive, about 2 on average and up to 4.5 for the most collapsed clusters. Their value
      is only visible jointly.

    A fraction ``mismatch_rate`` of captions describes another pair, which both models see
    (``S_ii`` near 0: not learnable).

    Args:
        n: Pairs in the super-batch.
        dim: Embedding width.
        mean_cluster: Mean near-duplicate cluster size.
        p_hard: Probability that a cluster is only coarsely learnt.
        p_unlearnt: Probability that a cluster is not learnt at all.
        mismatch_rate: Fraction of mismatched captions.
        seed: NumPy seed.

    Returns:
        Both models' embeddings (scale 10, bias -5) and the planted kinds.
    """
    if not (p_hard >= 0 and p_unlearnt >= 0 and p_hard + p_unlearnt <= 1):
        raise ValueError(f"need p_hard, p_unlearnt >= 0 with sum <= 1, got {p_hard}, {p_unlearnt}")
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.geometric(1.0 / mean_cluster)))
    k = len(sizes)
    cluster = np.repeat(np.arange(k), sizes)[:n]
    kind_of = rng.choice(3, size=k, p=[1 - p_hard - p_unlearnt, p_hard, p_unlearnt])
    kind = kind_of[cluster]  # 0 learnt, 1 hard, 2 unlearnt
    resolution = rng.uniform(0.0, 0.4, size=k)[cluster, None]  # the learner's, in hard clusters
    blur = rng.uniform(0.1, 1.2, size=k)[cluster, None]

    def noise(scale: Any) -> np.ndarray:  # per-pair norm about ``scale``
        return scale * rng.normal(size=(n, dim)) / np.sqrt(dim)

    centres = _unit(rng.normal(size=(k, dim)))
    detail = _unit(rng.normal(size=(n, dim)))
    content = _unit(centres[cluster] + 1.2 * detail)
    mismatched = rng.random(n) < mismatch_rate
    source = np.where(mismatched, rng.integers(n, size=n), np.arange(n))
    ref_image = _unit(content + noise(0.15))
    ref_text = _unit(content[source] + noise(0.15))
    hard = (kind == 1)[:, None]
    unlearnt = (kind == 2)[:, None]
    coarse_image = _unit(centres[cluster] + resolution * detail + noise(blur))
    coarse_text = _unit(
        centres[cluster[source]] + resolution[source] * detail[source] + noise(blur)
    )
    learner_image = np.where(
        hard,
        coarse_image,
        np.where(unlearnt, _unit(content + noise(3.0)), _unit(ref_image + noise(0.1))),
    )
    learner_text = np.where(hard, coarse_text, _unit(ref_text + noise(0.1)))
    labels = np.array(["learnt", "hard", "unlearnt"])[kind]
    labels = np.where(mismatched, "mismatched", labels)
    return SuperBatch(
        jestcore.PairEmbeddings(learner_image, learner_text, 10.0, -5.0),
        jestcore.PairEmbeddings(ref_image, ref_text, 10.0, -5.0),
        labels,
        cluster,
    )


def load_embeddings(path: str | os.PathLike[str]) -> tuple[jestcore.PairEmbeddings, ...]:
    """Learner and reference embeddings of a pool of pairs, from an ``.npz`` file.

    Args:
        path: A NumPy ``.npz`` with ``learner_image``, ``learner_text`` (``(P, d)``),
            ``learner_scale``, ``learner_bias`` (scalars) and the same four for ``reference_``.

    Returns:
        ``(learner, reference)`` as float64 :class:`jestcore.PairEmbeddings`.
    """
    with np.load(path, allow_pickle=False) as f:
        models = []
        for name in ("learner", "reference"):
            keys = [f"{name}_{x}" for x in ("image", "text", "scale", "bias")]
            missing = [key for key in keys if key not in f]
            if missing:
                raise ValueError(f"--embeddings {path}: missing arrays {missing}")
            image, text = (np.asarray(f[key], dtype=np.float64) for key in keys[:2])
            if image.ndim != 2 or image.shape != text.shape:
                raise ValueError(
                    f"--embeddings {path}: {keys[0]} and {keys[1]} must have the same (P, d) "
                    f"shape, got {image.shape} and {text.shape}"
                )
            scale, bias = (float(np.asarray(f[key]).reshape(())) for key in keys[2:])
            models.append(jestcore.PairEmbeddings(image, text, scale, bias))
    if models[0].image.shape[0] != models[1].image.shape[0]:
        raise ValueError(f"--embeddings {path}: learner and reference embed different pools")
    return tuple(models)


def pool_superbatch(pool: tuple[jestcore.PairEmbeddings, ...], n: int, *, seed: int) -> SuperBatch:
    """A super-batch of ``n`` pairs drawn without replacement from a pool of embeddings."""
    size = pool[0].image.shape[0]
    if n > size:
        raise ValueError(f"a super-batch of N = {n} needs a pool of at least N pairs, got {size}")
    idx = np.sort(np.random.default_rng(seed).choice(size, n, replace=False))
    learner, reference = (
        jestcore.PairEmbeddings(m.image[idx], m.text[idx], m.scale, m.bias) for m in pool
    )
    return SuperBatch(learner, reference, np.full(n, "", dtype=object), np.full(n, -1))


def score_matrix(batch: SuperBatch) -> np.ndarray:
    """The ``(N, N)`` float64 learnability matrix of a super-batch."""
    losses = (
        jestcore.sigmoid_loss_matrix(m.image, m.text, scale=m.scale, bias=m.bias)
        for m in (batch.learner, batch.reference)
    )
    return np.asarray(jestcore.learnability(*losses), dtype=np.float64)


# ----------------------------------------------------------------------------- optimum


def uniform_expectation(scores: np.ndarray, b: int) -> float:
    """The exact expected joint score of a uniformly random batch of ``b`` distinct items."""
    n = scores.shape[0]
    diag = float(np.trace(scores))
    off = float(scores.sum()) - diag
    return b / n * diag + (b * (b - 1) / (n * (n - 1)) * off if n > 1 else 0.0)


def _subset_blocks(n: int, b: int, block: int) -> Iterator[np.ndarray]:
    combos = itertools.combinations(range(n), b)
    dtype = np.dtype((np.int32, (b,)))
    while True:
        chunk = np.fromiter(itertools.islice(combos, block), dtype=dtype)
        if chunk.shape[0] == 0:
            return
        yield chunk.reshape(-1, b)


def exhaustive_best(
    scores: np.ndarray, b: int, *, max_subsets: int = MAX_SUBSETS
) -> tuple[float, np.ndarray]:
    """The best joint score over all ``C(N, b)`` batches, by vectorised enumeration.

    Args:
        scores: ``(N, N)`` score matrix.
        b: Batch size.
        max_subsets: Refuse to enumerate more subsets than this.

    Returns:
        ``(best score, its indices)``; among equal scores, the first subset in lexicographic
        order.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if not 1 <= b <= n:
        raise ValueError(f"b must be in [1, {n}], got {b}")
    if math.comb(n, b) > max_subsets:
        raise ValueError(f"C({n}, {b}) = {math.comb(n, b)} subsets exceeds {max_subsets}")
    diag, pair = np.diag(s), s + s.T
    best, best_idx = -np.inf, np.arange(b)
    for c in _subset_blocks(n, b, 1 << 16):
        total = diag[c].sum(axis=1)
        for p, q in itertools.combinations(range(b), 2):
            total += pair[c[:, p], c[:, q]]
        i = int(np.argmax(total))
        if total[i] > best:
            best, best_idx = float(total[i]), c[i].astype(np.int64)
    return best, best_idx


def upper_bound(scores: np.ndarray, b: int) -> float:
    """An upper bound of the best joint score of ``b`` items (valid for any score matrix).

    Write the score of ``B`` as ``sum_{i in B} (S_ii + 1/2 sum_{j in B, j != i} W_ij)`` with
    ``W = S + S^T``. Item i's term is at most ``u_i = S_ii + 1/2 (the b - 1 largest W_ij,
    j != i)``, so the score is at most the sum of the ``b`` largest ``u_i``.

    Args:
        scores: ``(N, N)`` score matrix.
        b: Batch size, between 1 and N.

    Returns:
        The bound.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if not 1 <= b <= n:
        raise ValueError(f"b must be in [1, {n}], got {b}")
    pair = s + s.T
    np.fill_diagonal(pair, -np.inf)
    partners = -np.sort(-pair, axis=1)[:, : b - 1].sum(axis=1) if b > 1 else 0.0
    u = np.diag(s) + 0.5 * partners
    return float(-np.sort(-u)[:b].sum())


class _Quadratic:
    """The joint score as a quadratic set function, with swap moves in O(b (N - b))."""

    def __init__(self, scores: np.ndarray):
        self.s = np.asarray(scores, dtype=np.float64)
        self.n = self.s.shape[0]
        self.diag = np.diag(self.s).copy()
        self.pair = self.s + self.s.T
        np.fill_diagonal(self.pair, 0.0)
        # No swap that gains less than this counts: floating-point noise cannot cycle.
        self.margin = 1e-12 * (float(np.abs(self.s).sum()) + 1.0)

    def score(self, x: np.ndarray) -> float:
        return float(self.s[np.ix_(x, x)].sum())

    def descend(self, start: np.ndarray) -> np.ndarray:
        """Steepest ascent over single swaps (one item out, one in) to a swap-local optimum."""
        inside = np.array(start, dtype=np.int64)
        mask = np.zeros(self.n, dtype=bool)
        mask[inside] = True
        outside = np.flatnonzero(~mask)
        if outside.size == 0:
            return inside
        # gain[m]: the change in score from adding m (m outside), or minus the change from
        # removing it (m inside).
        gain = self.diag + self.pair[:, inside].sum(axis=1)
        while True:
            delta = (
                gain[outside][None, :] - self.pair[np.ix_(inside, outside)] - gain[inside][:, None]
            )
            a, c = divmod(int(np.argmax(delta)), outside.size)
            if delta[a, c] <= self.margin:
                return inside
            i, m = inside[a], outside[c]
            gain += self.pair[:, m] - self.pair[:, i]
            inside[a], outside[c] = m, i

    def repair(self, kept: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Adds ``k`` items one at a time by Gumbel-perturbed conditional gain.

        The noise scale is a random fraction of the spread of the gains, from greedy to
        nearly uniform.
        """
        mask = np.zeros(self.n, dtype=bool)
        mask[kept] = True
        gain = self.diag + self.pair[:, kept].sum(axis=1)
        temperature = rng.uniform() * float(np.std(gain[~mask]))
        added = []
        for _ in range(k):
            z = np.where(mask, -np.inf, gain + temperature * rng.gumbel(size=self.n))
            m = int(np.argmax(z))
            mask[m] = True
            added.append(m)
            gain += self.pair[:, m]
        return np.concatenate([kept, np.array(added, dtype=np.int64)])


def swap_descent(scores: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Steepest-ascent local search over single swaps from ``start``.

    Args:
        scores: ``(N, N)`` score matrix.
        start: Distinct indices of the first batch.

    Returns:
        The indices of a swap-local optimum (no single swap raises the score).
    """
    return _Quadratic(scores).descend(np.asarray(start))


@dataclass(frozen=True)
class SearchResult:
    """The best batch found by :func:`local_search`.

    Attributes:
        score: Its joint score: a lower bound of the optimum.
        indices: The batch, sorted.
        from_starts: The best score of the swap descents from the starts alone.
        chains: The final score of each search chain.
        starts: Distinct starts.
    """

    score: float
    indices: np.ndarray
    from_starts: float
    chains: tuple[float, ...]
    starts: int


def local_search(
    scores: np.ndarray,
    b: int,
    starts: Sequence[np.ndarray],
    *,
    random_starts: int,
    iters: int,
    chains: int = 2,
    seed: int = 0,
) -> SearchResult:
    """A lower bound of the best joint score by swap descents and large-neighbourhood search.

    Every start (plus ``random_starts`` uniformly random batches) is improved by steepest-ascent
    swaps. Then ``chains`` independent chains start from the best of these and run ``iters``
    rounds each: take the chain's best batch, drop a random 1/8 to 1/2 of it, refill either by
    Gumbel-perturbed conditional gain (destroy and repair) or with random items (a kick), swap
    to a local optimum, and keep the result when it is at least as good. Chains that end at
    different scores show that the bound has not converged.

    Args:
        scores: ``(N, N)`` score matrix.
        b: Batch size.
        starts: Batches to start from (e.g. every method's); the result is at least as good as
            each of them.
        random_starts: Uniformly random starts added to ``starts``.
        iters: Rounds per chain.
        chains: Independent chains.
        seed: NumPy seed of the random starts and the chains.

    Returns:
        The best batch found.
    """
    q = _Quadratic(scores)
    n = q.n
    if not 1 <= b <= n:
        raise ValueError(f"b must be in [1, {n}], got {b}")
    rng = np.random.default_rng([seed, 0])
    unique = {tuple(sorted(int(i) for i in x)) for x in starts}
    for _ in range(random_starts):
        unique.add(tuple(sorted(rng.choice(n, b, replace=False).tolist())))
    found = [(q.score(y), y) for y in (q.descend(np.array(x)) for x in sorted(unique))]
    start_score, start = max(found, key=lambda t: t[0])
    results = []
    for chain in range(chains if b < n else 0):
        rng = np.random.default_rng([seed, 1 + chain])
        best_score, best = start_score, start
        for _ in range(iters):
            k = int(rng.integers(max(1, b // 8), max(1, b // 2) + 1))
            kept = best[rng.choice(b, b - k, replace=False)]
            if rng.random() < 0.5:
                x = q.repair(kept, k, rng)
            else:
                out = np.setdiff1d(np.arange(n), kept)
                x = np.concatenate([kept, rng.choice(out, k, replace=False)])
            y = q.descend(x)
            score = q.score(y)
            if score >= best_score:
                best_score, best = score, y
        results.append((best_score, best))
    best_score, best = max([(start_score, start), *results], key=lambda t: t[0])
    return SearchResult(
        best_score, np.sort(best), start_score, tuple(r[0] for r in results), len(unique)
    )


# ----------------------------------------------------------------------------- methods


def chunk_counts(n_chunks: Sequence[str | int], b: int) -> list[int]:
    """The chunk counts to run at batch size ``b``: those <= b, with ``"b"`` read as b."""
    counts = {b if str(c) == "b" else int(c) for c in n_chunks}
    return sorted(c for c in counts if 1 <= c <= b)


def sampled_label(gain: float, default: float = GAIN) -> str:
    """``"sampled"`` at the default gain, else ``"sampled, gain=G"``."""
    return "sampled" if gain == default else f"sampled, gain={gain:g}"


def select_all(
    scores: np.ndarray,
    b: int,
    n_chunks: Sequence[int],
    seed: int,
    *,
    gain: float = GAIN,
    compare_gains: Sequence[float] = COMPARE_GAINS,
) -> dict[str, Any]:
    """The batch of ``b`` indices chosen by each method, with the portable generator's ``seed``.

    Sampled methods share the seed (common random numbers): uniform ranks by the noise alone,
    independent by gain * diagonal + the same noise, and joint with one chunk equals
    independent. "sampled" rows use ``gain``; each of ``compare_gains`` adds
    ``"(sampled, gain=G)"`` rows.
    """
    n = scores.shape[0]
    diag = np.ascontiguousarray(np.diag(scores))
    gains = [gain, *(g for g in compare_gains if g != gain)]
    chosen = {
        "uniform": jestcore.independent_select(np.zeros(n), b, seed=seed),
        **{
            f"independent ({sampled_label(g, gain)})": jestcore.independent_select(
                diag, b, seed=seed, gain=g
            )
            for g in gains
        },
        "independent (top-k)": jestcore.independent_select(diag, b, greedy=True),
    }
    for c in chunk_counts(n_chunks, b):
        for g in gains:
            chosen[f"joint ({sampled_label(g, gain)}) c={c}"] = jestcore.joint_select(
                scores, b, n_chunks=c, seed=seed, gain=g
            )
        chosen[f"joint (greedy) c={c}"] = jestcore.joint_select(scores, b, n_chunks=c, greedy=True)
    return chosen


def run_case(
    batch: SuperBatch,
    b: int,
    *,
    n_chunks: Sequence[int],
    seed: int,
    exact: bool,
    random_starts: int,
    iters: int,
    chains: int,
    gain: float = GAIN,
    compare_gains: Sequence[float] = COMPARE_GAINS,
) -> dict[str, Any]:
    """Every method's joint score on one super-batch, and the best achievable.

    Returns:
        A JSON-ready dict: each method's score and normalised score, the uniform expectation,
        the local-search bound (and the exact optimum when ``exact``), the upper bound, and for
        synthetic data how many pairs of each planted kind each method kept.
    """
    s = score_matrix(batch)
    chosen = select_all(s, b, n_chunks, seed, gain=gain, compare_gains=compare_gains)
    result: dict[str, Any] = {
        "scores": {name: float(jestcore.batch_score(s, idx)) for name, idx in chosen.items()},
        "uniform_expected": uniform_expectation(s, b),
        "upper_bound": upper_bound(s, b),
    }
    starts = [*chosen.values(), jestcore.joint_select(s, b, n_chunks=b, greedy=True)]
    t0 = time.perf_counter()
    search = local_search(
        s,
        b,
        [np.asarray(x) for x in starts],
        random_starts=random_starts,
        iters=iters,
        chains=chains,
        seed=seed,
    )
    result["local_search"] = {
        "score": float(jestcore.batch_score(s, search.indices)),
        "from_starts": search.from_starts,
        "chains": list(search.chains),
        "starts": search.starts,
        "seconds": time.perf_counter() - t0,
    }
    best_idx = search.indices
    if exact:
        t0 = time.perf_counter()
        _, best_idx = exhaustive_best(s, b)
        result["exact"] = {
            "score": float(jestcore.batch_score(s, best_idx)),
            "subsets": math.comb(s.shape[0], b),
            "seconds": time.perf_counter() - t0,
        }
    best = result["exact" if exact else "local_search"]["score"]
    expected = result["uniform_expected"]
    result["best"] = best

    def normalise(v: float) -> float:
        return (v - expected) / (best - expected) if best > expected else float("nan")

    result["normalised"] = {name: normalise(v) for name, v in result["scores"].items()}
    result["upper_bound_normalised"] = normalise(result["upper_bound"])
    kinds = batch.kind
    if any(kinds):
        result["kinds_kept"] = {
            name: {str(k): int(np.sum(kinds[np.asarray(idx)] == k)) for k in np.unique(kinds)}
            for name, idx in [*chosen.items(), ("best", best_idx)]
        }
    return result


# ----------------------------------------------------------------------------- cost


def chunk_cost(n: int, b: int, n_chunks: Sequence[str | int], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` runs of :func:`jestcore.joint_select_embeddings` per n_chunks.

    NumPy, float32, single-threaded BLAS (threads on a busy machine make small products
    erratic), after one warm-up run; the minimum is the least disturbed by other work.
    """
    from threadpoolctl import threadpool_limits

    batch = hard_negative_superbatch(n, seed=12345)
    learner, reference = (
        jestcore.PairEmbeddings(
            m.image.astype(np.float32), m.text.astype(np.float32), m.scale, m.bias
        )
        for m in (batch.learner, batch.reference)
    )
    out = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for c in chunk_counts(n_chunks, b):
            times = []
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                jestcore.joint_select_embeddings(learner, reference, b, n_chunks=c, seed=r)
                times.append(time.perf_counter() - t0)
            out[str(c)] = float(min(times[1:]))
    return out


# ----------------------------------------------------------------------------- report


def _stat(values: Sequence[float]) -> dict[str, float]:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of each method's score and normalised score, and of the bounds."""
    names = list(runs[0]["scores"])
    out: dict[str, Any] = {
        key: {name: _stat([r[key][name] for r in runs]) for name in names}
        for key in ("scores", "normalised")
    }
    for key in ("best", "uniform_expected", "upper_bound", "upper_bound_normalised"):
        out[key] = _stat([r[key] for r in runs])
    if "exact" in runs[0]:
        gaps = [r["exact"]["score"] - r["local_search"]["score"] for r in runs]
        out["local_search_found_exact"] = sum(
            g <= 1e-9 * (1.0 + abs(r["best"])) for g, r in zip(gaps, runs, strict=True)
        )
        out["local_search_max_gap"] = float(max(gaps))
    else:
        # How far apart the independent search chains ended, relative to best - uniform.
        out["chain_spread"] = float(
            max(
                (max(r["local_search"]["chains"]) - min(r["local_search"]["chains"]))
                / (r["best"] - r["uniform_expected"])
                if r["local_search"]["chains"]
                else 0.0
                for r in runs
            )
        )
    return out


def _method(name: str) -> tuple[str, int | None]:
    """``"joint (greedy) c=4"`` -> ``("joint (greedy)", 4)``; other names have no chunks."""
    head, _, chunks = name.partition(" c=")
    return head, int(chunks) if chunks else None


def records(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per case and method (the format of ``bench/results/*.json``)."""
    out = []
    for c in cases:
        sm = c["summary"]
        base = {
            "data": c["source"],
            "optimum": "exact" if c["exact"] else "local-search bound",
            "filter_ratio": c["filter_ratio"],
            "N": c["n"],
            "b": c["b"],
        }
        rows = [(name, sm["scores"][name], sm["normalised"][name]) for name in sm["scores"]]
        rows.append(("best", sm["best"], {"mean": 1.0, "sd": 0.0}))
        rows.append(("upper bound", sm["upper_bound"], sm["upper_bound_normalised"]))
        for name, score, normalised in rows:
            method, chunks = _method(name)
            out.append(
                {
                    **base,
                    "method": method,
                    "n_chunks": chunks,
                    "score": round(score["mean"], 3),
                    "score_sd": round(score["sd"], 3),
                    "normalised": round(normalised["mean"], 4),
                    "normalised_sd": round(normalised["sd"], 4),
                }
            )
    return out


def _cell(stat: dict[str, float], fmt: str) -> str:
    return f"{stat['mean']:{fmt}} ± {stat['sd']:{fmt}}"


def print_table(title: str, cases: list[dict[str, Any]]) -> None:
    """One table per regime: rows are methods, columns filter ratios."""
    print(f"\n{title}")
    head = [f"f={c['filter_ratio']} (N={c['n']}, b={c['b']})" for c in cases]
    width = max(34, *(len(h) + 2 for h in head))
    print(f"{'method':<34}" + "".join(f"{h:>{width}}" for h in head))
    names = list(dict.fromkeys(name for c in cases for name in c["summary"]["scores"]))
    for name in [*names, "best", "upper bound", "uniform (expected)"]:
        cells = []
        for c in cases:
            sm = c["summary"]
            if name == "best":
                cells.append(f"{_cell(sm['best'], '.1f')} (1.00)")
            elif name == "upper bound":
                ub, ub_norm = sm["upper_bound"], sm["upper_bound_normalised"]
                cells.append(f"{_cell(ub, '.1f')} ({_cell(ub_norm, '.2f')})")
            elif name == "uniform (expected)":
                cells.append(f"{_cell(sm['uniform_expected'], '.1f')} (0.00)")
            elif name in sm["scores"]:
                cells.append(
                    f"{_cell(sm['scores'][name], '.1f')} ({_cell(sm['normalised'][name], '.2f')})"
                )
            else:
                cells.append("n/a")
        print(f"{name:<34}" + "".join(f"{x:>{width}}" for x in cells))
    for c in cases:
        sm = c["summary"]
        if "local_search_found_exact" in sm:
            print(
                f"  f={c['filter_ratio']}: local search found the exact optimum in "
                f"{sm['local_search_found_exact']}/{len(c['runs'])} super-batches "
                f"(largest gap {sm['local_search_max_gap']:.3g})"
            )
        else:
            print(
                f"  f={c['filter_ratio']}: search chains ended at most "
                f"{sm['chain_spread']:.3f} (normalised) apart"
            )


def markdown_tables(result: dict[str, Any]) -> str:
    """The normalised scores as Markdown tables, one per regime (for the docs page)."""
    parts = []
    for label in dict.fromkeys(c["label"] for c in result["cases"]):
        cases = [c for c in result["cases"] if c["label"] == label]
        head = [f"f = {c['filter_ratio']} (N = {c['n']}, b = {c['b']})" for c in cases]
        lines = [
            f"**{label}**, normalised joint score, mean ± sd over {len(cases[0]['runs'])} seeds\n",
            "| method | " + " | ".join(head) + " |",
            "|---|" + "---:|" * len(cases),
        ]
        names = list(dict.fromkeys(n for c in cases for n in c["summary"]["normalised"]))
        for name in names:
            cells = [
                _cell(c["summary"]["normalised"][name], ".2f")
                if name in c["summary"]["normalised"]
                else "n/a"
                for c in cases
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        best = "exact optimum" if cases[0]["exact"] else "best found (lower bound)"
        lines.append(f"| {best} | " + " | ".join("1" for _ in cases) + " |")
        ub = [_cell(c["summary"]["upper_bound_normalised"], ".2f") for c in cases]
        lines.append("| upper bound | " + " | ".join(ub) + " |")
        raw = [
            f"{_cell(sm['uniform_expected'], '.0f')} → {_cell(sm['best'], '.0f')}"
            for sm in (c["summary"] for c in cases)
        ]
        lines.append("| *raw: uniform expectation → best* | " + " | ".join(raw) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot(result: dict[str, Any], path: Path) -> None:
    """Normalised joint score against n_chunks: one row per regime, one column per ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = result.get("config", {}).get("gain")

    def shown(name: str) -> str:  # "sampled" rows are at config.gain: say so on the plot
        return name.replace("(sampled)", f"(sampled, gain={gain:g})") if gain else name

    groups: dict[str, list[dict[str, Any]]] = {}
    for c in result["cases"]:
        groups.setdefault(c["label"], []).append(c)
    ncols = max(len(g) for g in groups.values())
    fig, axes = plt.subplots(
        len(groups), ncols, figsize=(4.2 * ncols, 3.4 * len(groups)), squeeze=False
    )
    for row, (label, cases) in enumerate(groups.items()):
        for col, c in enumerate(cases):
            ax = axes[row][col]
            sm = c["summary"]["normalised"]
            heads = [h for h in dict.fromkeys(_method(k)[0] for k in sm) if h.startswith("joint")]
            others = [h for h in heads if h not in ("joint (sampled)", "joint (greedy)")]
            styles = [("joint (sampled)", "C0", "o-"), ("joint (greedy)", "C1", "o-")]
            styles += [(h, f"C{4 + i}", "s--") for i, h in enumerate(others)]
            for head, colour, marker in styles:
                xs = sorted(_method(k)[1] for k in sm if _method(k)[0] == head)
                if not xs:
                    continue
                mean = np.array([sm[f"{head} c={k}"]["mean"] for k in xs])
                sd = np.array([sm[f"{head} c={k}"]["sd"] for k in xs])
                ax.plot(xs, mean, marker, color=colour, label=shown(head))
                ax.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.2)
            lines = [("independent (sampled)", ("C2", "--")), ("independent (top-k)", ("C3", ":"))]
            lines += [
                (k, ("C8", "--"))
                for k in sm
                if k.startswith("independent (sampled, ") and _method(k)[1] is None
            ]
            for name, style in [*lines, ("uniform", ("C7", "-."))]:
                ax.axhline(sm[name]["mean"], color=style[0], ls=style[1], label=shown(name))
            best = "exact optimum" if c["exact"] else "best found (lower bound)"
            ax.axhline(1.0, color="k", lw=1, label=best)
            if not c["exact"]:
                ub = c["summary"]["upper_bound_normalised"]["mean"]
                ax.axhspan(1.0, ub, color="k", alpha=0.08, label="optimum lies here (mean bounds)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(k) for k in xs])
            ax.set_title(
                f"{label}\nf = {c['filter_ratio']}, N = {c['n']}, b = {c['b']}", fontsize=9
            )
            ax.set_xlabel("n_chunks")
            if col == 0:
                ax.set_ylabel("normalised joint score\n(0 = uniform, 1 = best)")
            ax.grid(alpha=0.3)
        for col in range(len(cases), ncols):
            axes[row][col].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # the band's label appears only where a panel has one
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles, labels = [*handles, h], [*labels, lab]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--batch-size", type=int, default=None, help="b for the local-search cases")
    p.add_argument("--exact-batch-size", type=int, default=None, help="b for exhaustive search")
    p.add_argument("--filter-ratios", type=float, nargs="+", default=list(FILTER_RATIOS))
    p.add_argument(
        "--n-chunks",
        nargs="+",
        default=list(N_CHUNKS),
        help="chunk counts of joint selection; 'b' means one item per chunk",
    )
    p.add_argument("--seeds", type=int, default=None, help="super-batches per local-search case")
    p.add_argument("--exact-seeds", type=int, default=None, help="super-batches per exact case")
    p.add_argument("--random-starts", type=int, default=None)
    p.add_argument("--iters", type=int, default=None, help="rounds per search chain")
    p.add_argument("--chains", type=int, default=2, help="independent search chains")
    p.add_argument(
        "--gain",
        type=float,
        default=GAIN,
        help="score gain of the 'sampled' rows (default: the library's, the paper's 100)",
    )
    p.add_argument(
        "--compare-gains",
        type=float,
        nargs="*",
        default=list(COMPARE_GAINS),
        help="further gains of sampled selection, as 'sampled, gain=G' rows (default: 1, "
        "Algorithm 1 as printed)",
    )
    p.add_argument(
        "--embeddings",
        default=None,
        metavar="PATH.npz",
        help="also draw super-batches from these learner/reference embeddings: arrays "
        "learner_image, learner_text (P, d), learner_scale, learner_bias, and the same for "
        "reference_",
    )
    p.add_argument("--p-hard", type=float, default=0.25, help="synthetic: hard clusters")
    p.add_argument("--p-unlearnt", type=float, default=0.25, help="synthetic: unlearnt clusters")
    p.add_argument("--mismatch-rate", type=float, default=0.15, help="synthetic: mismatched pairs")
    p.add_argument("--cluster-size", type=float, default=6.0, help="synthetic: mean cluster size")
    p.add_argument(
        "--no-synthetic", action="store_true", help="only the --embeddings super-batches"
    )
    p.add_argument("--no-cost", action="store_true", help="skip timing n_chunks")
    p.add_argument(
        "--markdown",
        metavar="JSON",
        default=None,
        help="print the tables of an earlier run's JSON as Markdown, and exit",
    )
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON and the plot")
    p.add_argument(
        "--name", default="selection_quality", help="file name (stem) of the JSON and the plot"
    )
    args = p.parse_args(argv)
    defaults = {
        "batch_size": 24 if args.quick else 96,
        "exact_batch_size": 3 if args.quick else 5,
        "seeds": 2 if args.quick else 5,
        "exact_seeds": 2 if args.quick else 20,
        "random_starts": 4 if args.quick else 16,
        "iters": 10 if args.quick else 300,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for f in args.filter_ratios:
        if not 0.0 <= f < 1.0:
            p.error(f"--filter-ratios must lie in [0, 1), got {f}")
    for c in args.n_chunks:
        if c != "b" and not (c.isdigit() and int(c) >= 1):
            p.error(f"--n-chunks takes positive integers or 'b', got {c!r}")
    positive = ("batch_size", "exact_batch_size", "seeds", "exact_seeds", "chains")
    if min(getattr(args, k) for k in positive) < 1:
        p.error("--batch-size, --exact-batch-size, --seeds, --exact-seeds, --chains must be >= 1")
    if args.random_starts < 0 or args.iters < 0:
        p.error("--random-starts and --iters must be >= 0")
    for g in [args.gain, *args.compare_gains]:
        if not (math.isfinite(g) and g > 0):
            p.error(f"--gain and --compare-gains must be finite and > 0, got {g}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints tables, writes JSON and the plot; returns the exit status."""
    from tqdm import tqdm

    args = parse_args(argv)
    if args.markdown:
        print(markdown_tables(json.loads(Path(args.markdown).read_text())))
        return 0
    pool = load_embeddings(args.embeddings) if args.embeddings else None
    if args.no_synthetic and pool is None:
        raise SystemExit("--no-synthetic needs --embeddings")
    sources: list[tuple[str, Any]] = [] if args.no_synthetic else [("synthetic", None)]
    if pool is not None:
        sources.append((f"embeddings {Path(args.embeddings).name}", pool))
    plan = []
    for source, data in sources:
        for exact, b in ((True, args.exact_batch_size), (False, args.batch_size)):
            label = f"{source}, {'exact optimum' if exact else 'local-search bound'}"
            for f in args.filter_ratios:
                n = max(b, round(b / (1.0 - f)))
                if exact and math.comb(n, b) > MAX_SUBSETS:
                    raise SystemExit(
                        f"exhaustive search over C({n}, {b}) subsets is too large; lower "
                        "--exact-batch-size"
                    )
                seeds = args.exact_seeds if exact else args.seeds
                plan.append((label, source, data, exact, f, n, b, seeds))
    cases = []
    t_start = time.perf_counter()
    bar = tqdm(total=sum(p[-1] for p in plan), desc="selection quality", file=sys.stderr)
    for label, source, data, exact, f, n, b, seeds in plan:
        runs = []
        for seed in range(seeds):
            batch = (
                hard_negative_superbatch(
                    n,
                    mean_cluster=args.cluster_size,
                    p_hard=args.p_hard,
                    p_unlearnt=args.p_unlearnt,
                    mismatch_rate=args.mismatch_rate,
                    seed=seed,
                )
                if data is None
                else pool_superbatch(data, n, seed=seed)
            )
            runs.append(
                run_case(
                    batch,
                    b,
                    n_chunks=args.n_chunks,
                    seed=seed,
                    exact=exact,
                    random_starts=args.random_starts,
                    iters=args.iters,
                    chains=args.chains,
                    gain=args.gain,
                    compare_gains=args.compare_gains,
                )
            )
            bar.update()
        cases.append(
            {
                "label": label,
                "source": source,
                "exact": exact,
                "filter_ratio": f,
                "n": n,
                "b": b,
                "summary": summarise(runs),
                "runs": runs,
            }
        )
    bar.close()
    elapsed = time.perf_counter() - t_start
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python bench/selection_quality.py", *given])
    result: dict[str, Any] = {
        "title": "Selection quality: the joint score of the chosen batch",
        "description": (
            "Joint score sum_{i,j in B} S_ij (learnability) of the batch chosen by each method, "
            "mean and sd over seeds (super-batches); normalised = (score - uniform expectation) / "
            "(best - uniform expectation): 0 is chance, 1 the exact optimum (small N) or the "
            "best batch a local search found (a lower bound of the optimum). 'upper bound' is "
            "a provable bound of the optimum. 'sampled' rows draw at the score gain in "
            "config.gain (the library's default, 100); 'sampled, gain=G' rows at gain G (1 is "
            "Algorithm 1 as printed). See docs/selection-quality.md."
        ),
        "command": command,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "jestcore": jestcore.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "config": {
            "quick": args.quick,
            "seeds": args.seeds,
            "exact_seeds": args.exact_seeds,
            "filter_ratios": args.filter_ratios,
            "n_chunks": args.n_chunks,
            "batch_size": args.batch_size,
            "exact_batch_size": args.exact_batch_size,
            "random_starts": args.random_starts,
            "iters": args.iters,
            "chains": args.chains,
            "gain": args.gain,
            "compare_gains": args.compare_gains,
            "embeddings": args.embeddings,
            "synthetic": {
                "p_hard": args.p_hard,
                "p_unlearnt": args.p_unlearnt,
                "mismatch_rate": args.mismatch_rate,
                "cluster_size": args.cluster_size,
            },
            "seconds": round(elapsed, 1),
        },
        "results": records(cases),
        "cases": cases,
    }
    for label in dict.fromkeys(c["label"] for c in cases):
        group = [c for c in cases if c["label"] == label]
        print_table(
            f"Joint score sum_{{i,j in B}} S_ij, mean ± sd over {len(group[0]['runs'])} seeds "
            f"(normalised in brackets) - {label}",
            group,
        )
    if not args.no_cost:
        cost_n = 1024 if args.quick else 8192
        cost_b = round(cost_n * 0.2)
        result["cost"] = {
            "N": cost_n,
            "b": cost_b,
            "dim": 64,
            "what": "fastest of 5 runs of joint_select_embeddings, NumPy float32, 1 BLAS thread",
            "seconds": chunk_cost(cost_n, cost_b, args.n_chunks, 1 if args.quick else 5),
        }
        print(f"\nCost at N = {cost_n}, b = {cost_b} ({result['cost']['what']}):")
        print(
            "  "
            + "  ".join(f"c={c}: {t * 1e3:.0f} ms" for c, t in result["cost"]["seconds"].items())
        )
    out = Path(args.out)
    _atomic_write(
        out / f"{args.name}.json",
        lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()),
    )
    plot(result, out / f"{args.name}.png")
    print(f"\nwrote {out / f'{args.name}.json'} and {out / f'{args.name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
