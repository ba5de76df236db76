"""JEST in a jitted JAX train step: a SigLIP-style dual encoder trained with optax.

A small reference model is first trained on a clean curated split; the learner then trains on a
noisy pool (a quarter of its captions belong to another example), and at every step the jitted
train step scores a super-batch with both models, selects the most learnable quarter jointly
(JEST), gathers it and takes an optax step on it. Selection compiles once with the step, and
its state checkpoints with the parameters.

Run it: ``python examples/jax_minimal.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jestcore.adapters import jax as jj

from jestcore import PairEmbeddings

LATENT, IMAGE_DIM, TEXT_DIM, EMBED = 8, 24, 16, 16


def make_data(rng: np.random.Generator, n: int, noise_fraction: float) -> dict[str, np.ndarray]:
    """Paired image and text features of shared latents; a fraction of the texts are mismatched."""
    mix = np.random.default_rng(0)  # the "world": the same maps for every split
    to_image = mix.standard_normal((LATENT, IMAGE_DIM))
    to_text = mix.standard_normal((LATENT, TEXT_DIM))
    z = rng.standard_normal((n, LATENT))
    image = z @ to_image + 0.3 * rng.standard_normal((n, IMAGE_DIM))
    text = z @ to_text + 0.3 * rng.standard_normal((n, TEXT_DIM))
    noisy = rng.random(n) < noise_fraction
    text[noisy] = text[rng.permutation(np.flatnonzero(noisy))]
    return {
        "image": image.astype(np.float32),
        "text": text.astype(np.float32),
        "noisy": noisy,
    }


def init_params(key: jax.Array) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    return {
        "image": jax.random.normal(k1, (IMAGE_DIM, EMBED)) / np.sqrt(IMAGE_DIM),
        "text": jax.random.normal(k2, (TEXT_DIM, EMBED)) / np.sqrt(TEXT_DIM),
        # SigLIP's initialisation; explicit float32 (not weakly typed) so that the step's inputs
        # keep one type from the first step on, and the step compiles once
        "log_scale": jnp.asarray(np.log(10.0), dtype=jnp.float32),
        "bias": jnp.asarray(-10.0, dtype=jnp.float32),
    }


def embed(params: dict[str, Any], batch: dict[str, Any]) -> PairEmbeddings:
    """L2-normalised embeddings and the sigmoid-loss parameters, as jestcore expects them."""

    def unit(x: jax.Array) -> jax.Array:
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    return PairEmbeddings(
        unit(batch["image"] @ params["image"]),
        unit(batch["text"] @ params["text"]),
        jnp.exp(params["log_scale"]),
        params["bias"],
    )


def siglip_loss(params: dict[str, Any], batch: dict[str, Any]) -> jax.Array:
    """The pairwise sigmoid loss, averaged over the examples of the batch."""
    e = embed(params, batch)
    logits = e.scale * e.image @ e.text.T + e.bias
    labels = 2 * jnp.eye(logits.shape[0]) - 1
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]


def train_reference(data: dict[str, np.ndarray], steps: int, key: jax.Array) -> dict[str, Any]:
    """The reference model: plain SigLIP training on the clean split."""
    optimizer = optax.adam(1e-2)
    params = init_params(key)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(siglip_loss)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(1)
    n = data["image"].shape[0]
    for _ in range(steps):
        rows = rng.choice(n, size=64, replace=False)
        batch = {k: data[k][rows] for k in ("image", "text")}
        params, opt_state, _ = step(params, opt_state, batch)
    return params


def make_train_step(selector: jj.JESTSelector, optimizer: optax.GradientTransformation):
    """The learner's jitted step: score the super-batch, select jointly, update on the selection."""

    @jax.jit
    def train_step(params, opt_state, selection, reference_params, super_batch):
        learner = jax.lax.stop_gradient(embed(params, super_batch))  # scoring needs no gradient
        reference = embed(reference_params, super_batch)
        sub_batch, _, selection = selector.select_batch(selection, super_batch, learner, reference)
        loss, grads = jax.value_and_grad(siglip_loss)(params, sub_batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, selection, loss, jnp.mean(sub_batch["noisy"])

    return train_step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="learner steps")
    parser.add_argument("--super-batch", type=int, default=256, help="N, examples scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write a summary here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    curated = make_data(rng, 1024, noise_fraction=0.0)
    pool = make_data(rng, 16384, noise_fraction=0.25)
    key_ref, key_learner = jax.random.split(jax.random.key(args.seed))
    t0 = time.perf_counter()
    reference_params = train_reference(curated, 150, key_ref)

    selector = jj.JESTSelector(filter_ratio=0.75, n_chunks=4)  # select 64 of 256, in 4 chunks
    optimizer = optax.adam(1e-2)
    params = init_params(key_learner)
    opt_state = optimizer.init(params)
    selection = selector.init(args.seed)
    train_step = make_train_step(selector, optimizer)

    losses, noisy = [], []
    for step in range(args.steps):
        rows = rng.choice(pool["image"].shape[0], size=args.super_batch, replace=False)
        super_batch = {k: v[rows] for k, v in pool.items()}
        params, opt_state, selection, loss, noisy_fraction = train_step(
            params, opt_state, selection, reference_params, super_batch
        )
        losses.append(float(loss))
        noisy.append(float(noisy_fraction))
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.3f}  noisy in selection {noisy[-1]:.2f}")

    summary = {
        "steps": args.steps,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-10:])),
        "noisy_in_pool": float(pool["noisy"].mean()),
        "noisy_selected": float(np.mean(noisy)),
        "selection_step": int(selection.step),
        "compilations": train_step._cache_size(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(
        f"noisy pairs: {summary['noisy_in_pool']:.0%} of the pool, "
        f"{summary['noisy_selected']:.0%} of what JEST selected"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
