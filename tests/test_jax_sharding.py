"""Sharded selection on 8 simulated CPU devices, in a subprocess (the suite keeps one device).

The checks below run in one child process with 8 CPU devices (``tests/xla_devices.py``, the
one launcher); each reports ``ok`` or its traceback, and each becomes one pytest test here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xla_devices
from helpers import (
    RTOL,
    assert_same_embeddings_selection,
    float32_models,
)
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from jestcore.adapters import jax as jj

import jestcore
from jestcore import PairEmbeddings, fold_in, gumbel_noise

DEVICES = 8


def models(seed: int, n: int) -> tuple[PairEmbeddings, PairEmbeddings]:
    """Two float32 models (NumPy), d = 8, the reference's scale 4 and bias -2."""
    return float32_models(seed, n, 8, reference=(4.0, -2.0))


def mesh_1d():
    return jax.make_mesh((DEVICES,), ("batch",), axis_types=(AxisType.Auto,))


def sharded(model: PairEmbeddings | None, mesh):
    if model is None:
        return None
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    return PairEmbeddings(
        jax.device_put(model.image, rows),
        jax.device_put(model.text, rows),
        jnp.asarray(model.scale),
        jnp.asarray(model.bias),
    )


def assert_near(got, expected, learner, reference, score, n_select, n_chunks, seed, gain=100.0):
    """Near-tie tolerant comparison; ``gain`` is the one both selections used (the default)."""
    noise = None if seed is None else gumbel_noise(seed, (n_chunks, learner.image.shape[0]), xp=np)
    assert_same_embeddings_selection(
        got, expected, (learner, reference), score, n_select, n_chunks, noise, gain=gain
    )


STATIC = ("n_select", "mesh", "axis", "scope", "n_chunks", "score", "gain", "greedy", "loss")
SELECT = jax.jit(jj.select_sharded, static_argnames=STATIC)


# ----------------------------------------------------------------------------- checks (child)


def check_eight_devices():
    assert jax.device_count() == DEVICES, jax.devices()


def check_global_is_exact_and_every_device_agrees():
    mesh = mesh_1d()
    for score, seed, n_select, n_chunks in (
        ("learnability", 11, 24, 5),  # 24 % 5 != 0: two chunk sizes
        ("hard_learner", 2**32 - 1, 16, 16),
        ("easy_reference", None, 8, 3),
    ):
        learner, reference = models(n_select, 64)
        args = (
            learner if score != "easy_reference" else None,
            reference if score != "hard_learner" else None,
        )
        randomness = {"greedy": True} if seed is None else {"seed": seed}
        got = SELECT(
            *(sharded(m, mesh) for m in args),
            n_select,
            mesh=mesh,
            scope="global",
            n_chunks=n_chunks,
            score=score,
            **({"greedy": True} if seed is None else {"seed": jnp.uint32(seed)}),
        )
        assert got.sharding.is_fully_replicated
        copies = [np.asarray(s.data) for s in got.addressable_shards]
        assert len(copies) == DEVICES
        for c in copies[1:]:
            np.testing.assert_array_equal(c, copies[0])
        expected = jestcore.joint_select_embeddings(
            *args, n_select, n_chunks=n_chunks, score=score, **randomness
        )
        assert_near(got, expected, learner, reference, score, n_select, n_chunks, seed)
        unsharded = jj.joint_select_embeddings(
            *(None if m is None else PairEmbeddings(*map(jnp.asarray, m)) for m in args),
            n_select,
            n_chunks=n_chunks,
            score=score,
            **randomness,
        )
        assert_near(got, unsharded, learner, reference, score, n_select, n_chunks, seed)


def check_global_on_a_two_axis_mesh():
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    learner, reference = models(3, 40)
    got = SELECT(
        *(sharded(m, mesh) for m in (learner, reference)),
        12,
        mesh=mesh,
        scope="global",
        n_chunks=3,
        seed=jnp.uint32(5),
    )
    expected = jestcore.joint_select_embeddings(learner, reference, 12, n_chunks=3, seed=5)
    assert_near(got, expected, learner, reference, "learnability", 12, 3, 5)


def check_global_with_x64_selects_in_float64():
    mesh = mesh_1d()
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        x = rng.standard_normal((4, 48, 5))
        learner = PairEmbeddings(x[0], x[1], np.float64(10.0), np.float64(-5.0))
        reference = PairEmbeddings(x[2], x[3], np.float64(3.0), np.float64(-1.0))
        got = SELECT(
            *(sharded(m, mesh) for m in (learner, reference)),
            16,
            mesh=mesh,
            scope="global",
            n_chunks=3,
            seed=jnp.uint32(21),
        )
        assert got.dtype == jnp.int64
        expected = jestcore.joint_select_embeddings(learner, reference, 16, n_chunks=3, seed=21)
        noise = gumbel_noise(21, (3, 48), xp=np)
        assert_same_embeddings_selection(
            got, expected, (learner, reference), "learnability", 16, 3, noise, rtol=RTOL["float64"]
        )


def check_sharded_selector_uses_the_spec_filter_ratio_rule():
    mesh = mesh_1d()
    for n, f in ((80, 0.8), (160, 0.75), (64, 0.5)):  # sub-batches of 16, 40 and 32
        b = jestcore.sub_batch_size(n, filter_ratio=f)
        learner, reference = models(n, n)
        args = [sharded(m, mesh) for m in (learner, reference)]
        for scope in ("global", "local"):
            selector = jj.JESTSelector(filter_ratio=f, n_chunks=2, mesh=mesh, scope=scope)
            assert selector.n_select(n) == b
            idx, _ = jax.jit(selector.select)(selector.init(5), *args)
            assert idx.shape == (b,)
            if scope == "global":
                seed = fold_in(5, 0)
                expected = jestcore.joint_select_embeddings(
                    learner, reference, b, n_chunks=2, seed=seed
                )
                assert_near(idx, expected, learner, reference, "learnability", b, 2, seed)
            else:
                per = n // DEVICES
                got = np.asarray(idx).reshape(DEVICES, b // DEVICES)
                for i in range(DEVICES):
                    assert set(got[i].tolist()) <= set(range(i * per, (i + 1) * per))


def check_local_selects_per_shard_with_folded_seeds():
    mesh = mesh_1d()
    learner, reference = models(7, 96)  # 12 per device
    got = SELECT(
        sharded(learner, mesh),
        sharded(reference, mesh),
        32,  # 4 per device
        mesh=mesh,
        scope="local",
        n_chunks=3,
        seed=jnp.uint32(99),
    )
    assert got.sharding.spec == PartitionSpec("batch")
    parts = {s.device.id: np.asarray(s.data) for s in got.addressable_shards}
    for i, device in enumerate(mesh.devices.flat):
        rows = slice(12 * i, 12 * (i + 1))
        shard = [
            PairEmbeddings(m.image[rows], m.text[rows], m.scale, m.bias) for m in models(7, 96)
        ]
        seed = fold_in(99, i)
        expected = jestcore.joint_select_embeddings(*shard, 4, n_chunks=3, seed=seed)
        local = parts[device.id] - 12 * i
        assert_near(local, expected, *shard, "learnability", 4, 3, seed)
    np.testing.assert_array_equal(np.concatenate([parts[d.id] for d in mesh.devices.flat]), got)


def check_gain_reaches_both_scopes_and_the_selector():
    mesh = mesh_1d()
    learner, reference = models(12, 64)  # 8 per device
    args = [sharded(m, mesh) for m in (learner, reference)]
    for gain in (1.0, 3.5):
        got = SELECT(*args, 16, mesh=mesh, scope="global", n_chunks=4, seed=3, gain=gain)
        expected = jestcore.joint_select_embeddings(
            learner, reference, 16, n_chunks=4, seed=3, gain=gain
        )
        assert_near(got, expected, learner, reference, "learnability", 16, 4, 3, gain=gain)
        got = SELECT(*args, 16, mesh=mesh, scope="local", n_chunks=2, seed=3, gain=gain)
        for i in range(DEVICES):
            rows = slice(8 * i, 8 * (i + 1))
            shard = [
                PairEmbeddings(m.image[rows], m.text[rows], m.scale, m.bias) for m in models(12, 64)
            ]
            seed = fold_in(3, i)
            expected = jestcore.joint_select_embeddings(*shard, 2, n_chunks=2, seed=seed, gain=gain)
            local = np.asarray(got)[2 * i : 2 * (i + 1)] - 8 * i
            assert_near(local, expected, *shard, "learnability", 2, 2, seed, gain=gain)
        selector = jj.JESTSelector(batch_size=16, n_chunks=4, mesh=mesh, gain=gain)
        idx, _ = jax.jit(selector.select)(selector.init(3), *args)
        seed = fold_in(3, 0)
        expected = jestcore.joint_select_embeddings(
            learner, reference, 16, n_chunks=4, seed=seed, gain=gain
        )
        assert_near(idx, expected, learner, reference, "learnability", 16, 4, seed, gain=gain)
    # the gain changes the draw, and is checked before any work
    at_1 = SELECT(*args, 16, mesh=mesh, scope="global", n_chunks=4, seed=3, gain=1.0)
    at_100 = SELECT(*args, 16, mesh=mesh, scope="global", n_chunks=4, seed=3)
    assert not np.array_equal(np.asarray(at_1), np.asarray(at_100))
    for bad, error in ((0.0, ValueError), (True, TypeError)):
        try:
            jj.select_sharded(*args, 16, mesh=mesh, n_chunks=4, seed=3, gain=bad)
        except error as e:
            assert "gain" in str(e)
        else:
            raise AssertionError(f"gain={bad!r} was accepted")


def check_softmax_reaches_both_scopes_and_the_selector():
    from test_softmax import assert_matches_algorithm_3

    mesh = mesh_1d()
    learner, reference = models(13, 64)  # 8 per device
    args = [sharded(m, mesh) for m in (learner, reference)]
    rtol = RTOL["float32"]
    for score in ("learnability", "hard_learner"):
        needed = (learner, reference if score == "learnability" else None)
        on_mesh = (args[0], args[1] if score == "learnability" else None)
        got = SELECT(
            *on_mesh, 16, mesh=mesh, scope="global", n_chunks=4, score=score, seed=3,
            loss="softmax",
        )  # fmt: skip
        noise = gumbel_noise(3, (4, 64), xp=np)
        assert_matches_algorithm_3(np.asarray(got), *needed, score, 16, 4, noise, rtol)
        assert len({d.id for d in got.sharding.device_set}) == DEVICES  # replicated
    got = SELECT(*args, 16, mesh=mesh, scope="local", n_chunks=2, seed=3, loss="softmax")
    for i in range(DEVICES):
        rows = slice(8 * i, 8 * (i + 1))
        shard = [
            PairEmbeddings(m.image[rows], m.text[rows], m.scale, m.bias) for m in models(13, 64)
        ]
        noise = gumbel_noise(fold_in(3, i), (2, 8), xp=np)
        local = np.asarray(got)[2 * i : 2 * (i + 1)] - 8 * i
        assert_matches_algorithm_3(local, *shard, "learnability", 2, 2, noise, rtol)
    selector = jj.JESTSelector(batch_size=16, n_chunks=4, mesh=mesh, loss="softmax")
    idx, _ = jax.jit(selector.select)(selector.init(3), *args)
    noise = gumbel_noise(fold_in(3, 0), (4, 64), xp=np)
    assert_matches_algorithm_3(
        np.asarray(idx), learner, reference, "learnability", 16, 4, noise, rtol
    )
    sigmoid = SELECT(*args, 16, mesh=mesh, scope="global", n_chunks=4, seed=3)
    softmax = SELECT(*args, 16, mesh=mesh, scope="global", n_chunks=4, seed=3, loss="softmax")
    assert not np.array_equal(np.asarray(sigmoid), np.asarray(softmax))
    try:
        jj.select_sharded(*args, 16, mesh=mesh, n_chunks=4, seed=3, loss="clip")
    except ValueError as e:
        assert "loss must be one of" in str(e)
    else:
        raise AssertionError("loss='clip' was accepted")


def check_gather_is_bit_exact_and_sharded():
    mesh = mesh_1d()
    n = 32
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    x[5, 0] = -0.0
    x[9, 1] = np.float32(np.nan)
    batch = {
        "x": x,
        "bf16": np.arange(n, dtype=np.float32).astype(jnp.bfloat16),
        "flag": np.arange(n) % 3 == 0,
        "id": np.arange(n, dtype=np.int32) - 7,
    }
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    on_mesh = jax.device_put(batch, rows)
    chosen = np.array([9, 5, 31, 0, 12, 13, 30, 2], dtype=np.int32)
    sub = jax.jit(jj.gather_sharded, static_argnames=("mesh", "axis", "scope"))(
        on_mesh, jnp.asarray(chosen), mesh=mesh, scope="global"
    )
    for name, leaf in sub.items():
        assert leaf.sharding.spec == PartitionSpec("batch"), name
        expected = np.asarray(batch[name])[chosen]
        assert np.asarray(leaf).tobytes() == expected.tobytes(), name
    # local: each device's indices point into its own shard (4 rows per device)
    local = np.array([1, 0, 6, 7, 8, 10, 15, 12, 17, 16, 22, 21, 26, 24, 28, 31], dtype=np.int32)
    sub = jj.gather_sharded(on_mesh, jax.device_put(local, rows), mesh=mesh, scope="local")
    for name, leaf in sub.items():
        assert leaf.sharding.spec == PartitionSpec("batch"), name
        assert np.asarray(leaf).tobytes() == np.asarray(batch[name])[local].tobytes(), name


def check_a_jitted_train_step_on_the_mesh_compiles_once():
    mesh = mesh_1d()
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    for scope in ("global", "local"):
        selector = jj.JESTSelector(filter_ratio=0.75, n_chunks=2, mesh=mesh, scope=scope)
        traces = []

        def step(state, batch, ref, selector=selector, traces=traces):
            traces.append(1)
            learner = PairEmbeddings(batch["image"], batch["text"], 10.0, -5.0)
            sub, idx, state = selector.select_batch(state, batch, learner, ref)
            return state, idx, jnp.sum(sub["image"] * sub["text"])

        step = jax.jit(step)
        state = selector.init(3)
        for t in range(3):
            learner, reference = models(t, 64)
            batch = jax.device_put({"image": learner.image, "text": learner.text}, rows)
            state, idx, total = step(state, batch, sharded(reference, mesh))
            picked = np.sort(np.asarray(idx))
            expected = float(np.sum(learner.image[picked] * learner.text[picked]))
            np.testing.assert_allclose(float(total), expected, rtol=1e-5)
            assert idx.shape == (16,) and len(set(picked.tolist())) == 16
        assert int(state.step) == 3
        assert len(traces) == 1, scope
        assert step._cache_size() == 1, scope


def check_uneven_splits_and_bad_meshes_are_refused():
    mesh = mesh_1d()
    learner, reference = (sharded(m, mesh) for m in models(0, 64))
    cases = [
        ({"n_select": 12}, ValueError, "n_select must be divisible by the 8 devices"),
        ({"axis": "data"}, ValueError, "axis must be one of the mesh's axes"),
        ({"scope": "world"}, ValueError, "scope must be one of"),
        (
            {"scope": "local", "n_chunks": 3},
            ValueError,
            "n_chunks must be between 1 and n_select / D",
        ),
        ({"mesh": "mesh"}, TypeError, "mesh must be a jax.sharding.Mesh"),
    ]
    for change, error, message in cases:
        kwargs = {"n_select": 16, "mesh": mesh, "n_chunks": 2, "seed": 0, **change}
        try:
            jj.select_sharded(learner, reference, **kwargs)
        except error as e:
            assert message in str(e), (change, str(e))
        else:
            raise AssertionError(f"{change} was accepted")
    odd = PairEmbeddings(*(np.zeros((60, 4), np.float32),) * 2, 1.0, 0.0)
    try:
        jj.select_sharded(odd, odd, 8, mesh=mesh, n_chunks=2, seed=0)
    except ValueError as e:
        assert "N (the super-batch size) must be divisible by the 8 devices" in str(e)
    else:
        raise AssertionError("N = 60 over 8 devices was accepted")


CHECKS = xla_devices.check_names(globals())


# ----------------------------------------------------------------------------- tests (parent)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "results.json"
    return xla_devices.run_checks(__file__, DEVICES, out)


@pytest.mark.parametrize("name", CHECKS)
def test_on_eight_simulated_devices(results, name):
    assert results[name] == "ok", results[name]


if __name__ == "__main__":
    xla_devices.child_main(globals())
