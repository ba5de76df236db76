"""JEST in an ordinary PyTorch training loop: a SigLIP-style dual encoder on a noisy pool.

A small reference model is first trained on a clean curated split; the learner then trains on a
noisy pool (a quarter of its captions belong to another example). The DataLoader's batch is the
super-batch; JEST scores it with both models and keeps the most learnable quarter. The lines
that JEST adds to the loop are marked ``# JEST``.

Run it: ``python examples/torch_minimal.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jestcore.adapters.torch import JESTSelector, score_forward
from torch.utils.data import DataLoader, TensorDataset

import jestcore

LATENT, IMAGE_DIM, TEXT_DIM, EMBED = 8, 24, 16, 16


def make_data(gen: torch.Generator, n: int, noise_fraction: float) -> TensorDataset:
    """(image, text, noisy) triples from shared latents; a fraction of the texts are mismatched."""
    world = torch.Generator().manual_seed(0)  # the same maps for every split
    to_image = torch.randn(LATENT, IMAGE_DIM, generator=world)
    to_text = torch.randn(LATENT, TEXT_DIM, generator=world)
    z = torch.randn(n, LATENT, generator=gen)
    image = z @ to_image + 0.3 * torch.randn(n, IMAGE_DIM, generator=gen)
    text = z @ to_text + 0.3 * torch.randn(n, TEXT_DIM, generator=gen)
    noisy = torch.rand(n, generator=gen) < noise_fraction
    rows = torch.nonzero(noisy).squeeze(1)
    text[rows] = text[rows[torch.randperm(rows.numel(), generator=gen)]]
    return TensorDataset(image, text, noisy)


class DualEncoder(torch.nn.Module):
    """Linear image and text towers with SigLIP's learnt temperature and bias."""

    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Linear(IMAGE_DIM, EMBED)
        self.text = torch.nn.Linear(TEXT_DIM, EMBED)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = torch.nn.Parameter(torch.tensor(-10.0))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> jestcore.PairEmbeddings:
        """Unit-norm embeddings of both towers, with the sigmoid loss's scale and bias."""
        return jestcore.PairEmbeddings(
            F.normalize(self.image(image), dim=-1),
            F.normalize(self.text(text), dim=-1),
            self.log_scale.exp(),
            self.bias,
        )


def siglip_loss(e: jestcore.PairEmbeddings) -> torch.Tensor:
    """The pairwise sigmoid loss, averaged over the examples of the batch."""
    logits = e.scale * e.image @ e.text.T + e.bias
    labels = 2 * torch.eye(logits.shape[0]) - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def train_reference(curated: TensorDataset, steps: int, gen: torch.Generator) -> DualEncoder:
    """Plain SigLIP training on the clean split."""
    model = DualEncoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(curated, batch_size=64, shuffle=True, generator=gen, drop_last=True)
    step = 0
    while step < steps:
        for image, text, _ in loader:
            loss = siglip_loss(model(image, text))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return model.eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="learner steps")
    parser.add_argument("--super-batch", type=int, default=256, help="N, examples scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write a summary here")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    curated = make_data(gen, 1024, noise_fraction=0.0)
    pool = make_data(gen, 16384, noise_fraction=0.25)
    t0 = time.perf_counter()
    reference = train_reference(curated, 150, gen)

    model = DualEncoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(pool, batch_size=args.super_batch, shuffle=True, generator=gen)
    selector = JESTSelector(filter_ratio=0.75, n_chunks=4, seed=args.seed)  # JEST: keep 1 in 4

    losses, noisy = [], []
    step = 0
    while step < args.steps:
        for batch in loader:
            inputs = batch[:2]  # image, text (batch[2] marks the noisy pairs, for the printout)
            learner_out = score_forward(model, inputs)  # JEST: score the super-batch
            reference_out = score_forward(reference, inputs)  # JEST
            batch = selector(batch, learner_out, reference_out).batch  # JEST: select jointly
            image, text, is_noisy = batch
            loss = siglip_loss(model(image, text))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            noisy.append(is_noisy.float().mean().item())
            if step % 25 == 0 or step == args.steps - 1:
                gain = selector.last_stats["score_selected"] - selector.last_stats["score_all"]
                print(
                    f"step {step:4d}  loss {losses[-1]:.3f}  noisy in selection "
                    f"{noisy[-1]:.2f}  learnability gain {gain.item():.3f}"
                )
            step += 1
            if step == args.steps:
                break

    summary = {
        "steps": args.steps,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-10:])),
        "noisy_in_pool": pool.tensors[2].float().mean().item(),
        "noisy_selected": float(np.mean(noisy)),
        "selector": selector.state_dict(),
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
