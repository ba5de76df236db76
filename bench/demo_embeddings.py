"""Exports the demo's learner and reference embeddings of the pool for selection_quality.py.

Trains the demo's reference on the curated split and a learner on the pool with uniform sampling
for ``--steps`` steps (early in training, where selection matters), with the PyTorch trainer and
the demo's default config, then writes both models' embeddings of the whole pool to an ``.npz``
(``learner_image``, ``learner_text``, ``learner_scale``, ``learner_bias``, and the same for
``reference_``).

    python bench/demo_embeddings.py   # bench/results/tmp/demo_embeddings.npz (git-ignored)
    python bench/selection_quality.py --embeddings bench/results/tmp/demo_embeddings.npz
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from jestcore.adapters.demo import DemoConfig, super_batch_indices
from jestcore.adapters.demo import torch_backend as backend
from jestcore.adapters.demo.digits import make_digits
from jestcore.adapters.torch import trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="uniform learner steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/tmp/demo_embeddings.npz")
    args = p.parse_args()

    config = DemoConfig()
    data = make_digits(config.data)
    reference = backend.train_reference(data, config, args.seed)
    learner = backend.demo_model(config, args.seed)
    pool = data.pool
    trainer.train(
        learner,
        pool.images,
        pool.tokens,
        steps=args.steps,
        batch_size=config.batch_size,
        method="uniform",
        learning_rate=config.learning_rate,
        warmup_fraction=config.warmup_fraction,
        seed=args.seed,
        batches=lambda step: super_batch_indices(len(pool), config, args.seed, step),
    )
    arrays = {}
    for name, model in (("learner", learner), ("reference", reference)):
        e = backend.embed(model, pool.images, pool.tokens)
        arrays.update(
            {
                f"{name}_image": e.image,
                f"{name}_text": e.text,
                f"{name}_scale": np.float64(e.scale),
                f"{name}_bias": np.float64(e.bias),
            }
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    print(f"wrote {out}: {pool.images.shape[0]} pairs, learner after {args.steps} uniform steps")


if __name__ == "__main__":
    main()
