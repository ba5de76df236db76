"""A training loop killed at a random step and resumed from its checkpoint selects exactly what
the uninterrupted run selects, at every later step.

The loop is an ordinary PyTorch one: a small dual encoder trained with Adam on the sub-batches
that a :class:`~jestcore.adapters.torch.JESTSelector` picks (uniform warm-up steps first),
scored by the learner itself and a frozen reference. After every step it saves a checkpoint
(model, optimizer and selector state dicts, written atomically with ``torch.save``); the
checkpoint is read back with ``torch.load(..., weights_only=True)``, which never unpickles
arbitrary objects. Each run is a fresh process (``python test_torch_resume.py ...``):

* ``full``: the uninterrupted run;
* ``crash``: the same run, killed with ``SIGKILL`` at the start of a step chosen by a fixed
  seed (its checkpoints stay on disk);
* ``resume``: fresh objects loaded from the killed run's last checkpoint, and from one taken
  during warm-up, each run to the end.

With 2 ranks (gloo, DistributedDataParallel) the same loop runs one model per scope,
``"local"`` and ``"global"``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import ranks
import torch

import jestcore

HERE = Path(__file__).resolve()
STEPS, WARMUP, N_LOCAL, B, CHUNKS = 8, 2, 16, 4, 2
SELECTOR_SEED = 31
# The step at whose start the crash run is killed: after warm-up, so the resumed run selects
# from scores that depend on the trained weights (and the optimizer's moments).
KILL_AT = random.Random(2024).randrange(WARMUP + 1, STEPS)
WARMUP_RESUME = 1  # a second resume, from the checkpoint taken during warm-up
PROCESS_TIMEOUT_S = 240


class DualEncoder(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.image = torch.nn.Linear(8, 5)
        self.text = torch.nn.Linear(6, 5)
        self.log_scale = torch.nn.Parameter(torch.tensor(1.0))
        self.bias = torch.nn.Parameter(torch.tensor(-2.0))

    def forward(self, image, text):
        return jestcore.PairEmbeddings(
            torch.nn.functional.normalize(self.image(image), dim=1),
            torch.nn.functional.normalize(self.text(text), dim=1),
            self.log_scale.exp(),
            self.bias,
        )


def super_batch(step: int, rank: int):
    """The data loader: step ``step``'s super-batch of rank ``rank`` (a function of both)."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    ids = torch.arange(N_LOCAL) + N_LOCAL * (2 * step + rank)
    return {"id": ids, "image": torch.randn(N_LOCAL, 8, generator=gen),
            "text": torch.randn(N_LOCAL, 6, generator=gen)}  # fmt: skip


class Run:
    """One training setup: model, optimizer and selector for one scope."""

    def __init__(self, scope: str, world: int):
        from jestcore.adapters.torch import JESTSelector

        self.scope = scope
        self.model = DualEncoder(seed=0)
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(self.model) if world > 1 else self.model
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.selector = JESTSelector(
            batch_size=B, n_chunks=CHUNKS, seed=SELECTOR_SEED, warmup_steps=WARMUP, scope=scope,
            exchange="exact" if scope == "global" else "padded",
        )  # fmt: skip

    def state_dict(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "selector": self.selector.state_dict(),
        }

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.selector.load_state_dict(state["selector"])

    def train_step(self, batch, reference: torch.nn.Module) -> np.ndarray:
        from jestcore.adapters.torch import score_forward, siglip_loss

        learner = ref = None
        inputs = (batch["image"], batch["text"])
        if self.selector.needs_scores:
            learner = score_forward(self.model, inputs)
            ref = score_forward(reference, inputs)
        sub = self.selector(batch, learner, ref)
        self.optimizer.zero_grad()
        loss = siglip_loss(self.ddp(sub.batch["image"], sub.batch["text"]))
        loss.backward()
        self.optimizer.step()
        return sub.batch["id"].numpy()


def checkpoint_file(folder: Path, rank: int, step: int) -> Path:
    return folder / f"rank{rank}-after-step{step}.pt"


def save_atomically(state, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _train(mode: str, folder: str, rank: int, world: int) -> None:
    out_dir = Path(folder)
    checkpoints = out_dir / ("crash" if mode == "resume" else mode)  # resume the killed run
    checkpoints.mkdir(exist_ok=True)
    torch.set_num_threads(1)
    if world > 1:
        ranks.init_gloo(out_dir / f"rendezvous-{mode}", rank, world, timeout_s=60)
    reference = DualEncoder(seed=1).eval()  # frozen (e.g. trained on curated data)
    scopes = ("local", "global") if world > 1 else ("local",)
    record: dict[str, np.ndarray] = {}
    starts = {"full": [0], "crash": [0], "resume": [KILL_AT, WARMUP_RESUME]}[mode]
    for start in starts:
        runs = {scope: Run(scope, world) for scope in scopes}
        if start:
            state = torch.load(
                checkpoint_file(checkpoints, rank, start - 1), weights_only=True, map_location="cpu"
            )
            for scope, run in runs.items():
                run.load_state_dict(state[scope])
                assert run.selector.step == start
        for step in range(start, STEPS):
            if mode == "crash" and step == KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)
            for scope, run in runs.items():
                record[f"{scope}/from{start}/{step}"] = run.train_step(
                    super_batch(step, rank), reference
                )
            if mode != "resume":
                save_atomically(
                    {scope: run.state_dict() for scope, run in runs.items()},
                    checkpoint_file(checkpoints, rank, step),
                )
        for scope, run in runs.items():
            params = torch.cat([p.detach().reshape(-1) for p in run.model.parameters()])
            record[f"{scope}/from{start}/weights"] = params.numpy()
    np.savez(out_dir / f"{mode}-rank{rank}.npz", **record)
    if world > 1:
        # No rank tears gloo down while a peer still has work in flight (that aborts the peer
        # with "terminate called without an active exception").
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(mode: str, world: int, folder: Path) -> list[tuple[int, str]]:
    """Runs ``mode`` on every rank (:func:`ranks.launch`); returns ``(exit code, output)``."""
    return ranks.launch(HERE, [mode, folder], world, timeout=PROCESS_TIMEOUT_S)


def load(folder: Path, mode: str, world: int) -> list[dict[str, np.ndarray]]:
    return [ranks.load_npz(folder / f"{mode}-rank{r}.npz") for r in range(world)]


def check_resume(world: int, folder: Path) -> None:
    for code, log in launch("full", world, folder):
        assert code == 0, log
    for code, log in launch("crash", world, folder):
        assert code != 0, f"the crash run was not killed:\n{log}"
    assert not (folder / "crash-rank0.npz").exists()
    for r in range(world):  # the killed run's checkpoints stop before the step it died in
        assert checkpoint_file(folder / "crash", r, KILL_AT - 1).exists()
        assert not checkpoint_file(folder / "crash", r, KILL_AT).exists()
    for code, log in launch("resume", world, folder):
        assert code == 0, log
    full, resumed = load(folder, "full", world), load(folder, "resume", world)
    scopes = ("local", "global") if world > 1 else ("local",)
    for r in range(world):
        for scope in scopes:
            for start in (KILL_AT, WARMUP_RESUME):
                for step in range(start, STEPS):
                    expected = full[r][f"{scope}/from0/{step}"]
                    got = resumed[r][f"{scope}/from{start}/{step}"]
                    assert got.tolist() == expected.tolist(), (r, scope, start, step)
                # the same weights at the end, bit for bit
                assert np.array_equal(
                    resumed[r][f"{scope}/from{start}/weights"], full[r][f"{scope}/from0/weights"]
                )
    # the selections are real: they differ between steps and (local scope) between ranks
    steps = {tuple(full[0][f"local/from0/{t}"] % N_LOCAL) for t in range(STEPS)}
    assert len(steps) > STEPS // 2
    if world > 1:
        global_ids = np.concatenate([full[r][f"global/from0/{KILL_AT}"] for r in range(world)])
        assert len(set(global_ids.tolist())) == world * B  # one global selection, shared out


def test_killed_loop_resumes_with_identical_selections(tmp_path):
    check_resume(1, tmp_path)


@pytest.mark.slow
def test_killed_two_rank_loop_resumes_in_both_scopes(tmp_path):
    check_resume(2, tmp_path)


def test_checkpoints_load_without_unpickling(tmp_path):
    # The selector's state is plain data, and the checkpoint of the loop above loads with
    # weights_only=True; an arbitrary object in it would be refused.
    from jestcore.adapters.torch import JESTSelector

    selector = JESTSelector(filter_ratio=0.75, n_chunks=2, seed=7, warmup_steps=1)
    selector(torch.arange(8))
    state = selector.state_dict()
    assert all(isinstance(v, int | float | str | type(None)) for v in state["config"].values())
    assert isinstance(state["step"], int) and isinstance(state["seed"], int)
    torch.save({"selector": state}, tmp_path / "ok.pt")
    loaded = torch.load(tmp_path / "ok.pt", weights_only=True)
    fresh = JESTSelector(filter_ratio=0.75, n_chunks=2, seed=7, warmup_steps=1)
    fresh.load_state_dict(loaded["selector"])
    assert fresh.state_dict() == state and fresh.step == 1
    torch.save({"selector": state, "extra": Path("x")}, tmp_path / "object.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "object.pt", weights_only=True)


if __name__ == "__main__":
    _train(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
