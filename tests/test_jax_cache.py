"""The reference cache from JAX: written from JAX arrays, looked up by id as JAX arrays, fed to a
jitted selection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jestcore.adapters import jax as jj
from jestcore.adapters.cache import CacheError, write_cache

import jestcore

FP = "my-reference-params-v3"
STATIC = ("n_select", "n_chunks")


def reference(n: int = 32, d: int = 8, seed: int = 0):
    """A reference's outputs on a pool, computed in JAX, and the pool's example ids."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    ids = jax.random.permutation(k3, 1000)[:n]
    image = jax.random.normal(k1, (n, d), jnp.float32)
    text = jax.random.normal(k2, (n, d), jnp.float32)
    return ids, jestcore.PairEmbeddings(image, text, jnp.float32(10.0), jnp.float32(-10.0))


def test_write_from_jax_arrays_and_look_up_as_jax_arrays(tmp_path):
    ids, emb = reference()
    write_cache(tmp_path / "c", ids, emb, fingerprint=FP)
    cache = jj.EmbeddingCache(tmp_path / "c", fingerprint=FP)
    step = ids[jnp.array([3, 30, 0, 17, 9, 22, 11, 5])]  # a super-batch's ids, any order
    got = cache.lookup(step)
    assert isinstance(got, jestcore.PairEmbeddings)
    assert isinstance(got.image, jax.Array) and got.image.dtype == jnp.float32
    pos = np.array([3, 30, 0, 17, 9, 22, 11, 5])
    # what was stored is what is read back: bitwise
    assert np.array_equal(np.asarray(got.image), np.asarray(emb.image)[pos])
    assert np.array_equal(np.asarray(got.text), np.asarray(emb.text)[pos])
    assert (got.scale, got.bias) == (10.0, -10.0)
    # the lookup feeds a jitted selection: the same inputs give the same indices
    learner = jestcore.PairEmbeddings(got.text, got.image, 10.0, -10.0)
    select = jax.jit(jj.joint_select_embeddings, static_argnames=STATIC)
    fresh = jestcore.PairEmbeddings(emb.image[pos], emb.text[pos], 10.0, -10.0)
    a = select(learner, got, n_select=4, n_chunks=2, seed=7)
    b = select(learner, fresh, n_select=4, n_chunks=2, seed=7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    half = cache.lookup(np.asarray(step), dtype=jnp.float16, device=jax.devices()[0])
    assert half.image.dtype == jnp.float16 and half.image.devices() == {jax.devices()[0]}


def test_lookup_runs_outside_jit_and_refuses_what_it_cannot_serve(tmp_path):
    ids, emb = reference()
    write_cache(tmp_path / "c", ids, emb, fingerprint=FP)
    cache = jj.EmbeddingCache(tmp_path / "c", fingerprint=FP)
    with pytest.raises(TypeError, match=r"call it outside jax\.jit"):
        jax.jit(lambda i: cache.lookup(i).image)(ids[:4])
    with pytest.raises(KeyError, match=r"1 of 2 ids are not in the cache"):
        cache.lookup(jnp.array([int(ids[0]), 5000]))
    with pytest.raises(TypeError, match="integer example ids"):
        cache.lookup(jnp.zeros(3))
    with pytest.raises(CacheError, match="different model, config or dtype"):
        jj.EmbeddingCache(tmp_path / "c", fingerprint="another-reference")


def test_shards_and_per_example_values(tmp_path):
    ids, _ = reference(16)
    losses = jnp.linspace(0.0, 1.0, 16, dtype=jnp.float32)
    write_cache(tmp_path / "a", ids[:10], losses[:10], fingerprint=FP)
    write_cache(tmp_path / "b", ids[10:], losses[10:], fingerprint=FP)
    cache = jj.EmbeddingCache([tmp_path / "a", tmp_path / "b"], fingerprint=FP)
    order = jnp.array([15, 0, 9, 10, 3])
    got = cache.lookup(ids[order])
    assert isinstance(got, jax.Array) and np.array_equal(np.asarray(got), np.asarray(losses)[order])
