"""docs/recipes/dataloader.md: a DataLoader of super-batches with ids, workers and a short last one.

Runs the page's code and checks what it did.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from recipe_pages import run_page


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dataloader")  # the reference cache lands here
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        # Other tests of this session import JAX, which warns at every fork; a user's PyTorch
        # process has no JAX threads, and the workers here touch none.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        mp.chdir(cwd)
        return run_page("dataloader.md")


def test_loader_is_the_one_described(page):
    loader = page["loader"]
    assert loader.batch_size == 32 and not loader.drop_last and loader.num_workers > 0
    assert page["selector"].n_chunks == 16  # the default: capped per step, no workaround


def test_each_epoch_scores_every_example_once_and_keeps_a_quarter(page):
    log = page["log"]
    assert [(len(ids), len(chosen)) for ids, chosen in log] == ([(32, 8)] * 3 + [(16, 4)]) * 2
    assert page["selector"].step == len(log) == 8
    for epoch in (log[:4], log[4:]):
        seen = torch.cat([ids for ids, _ in epoch])
        assert sorted(seen.tolist()) == list(range(112))
    assert [ids.tolist() for ids, _ in log[:4]] != [ids.tolist() for ids, _ in log[4:]]


def test_selected_ids_come_from_their_super_batch(page):
    for ids, chosen in page["log"]:
        assert len(set(chosen.tolist())) == len(chosen)
        assert set(chosen.tolist()) <= set(ids.tolist())


def test_the_cache_returns_the_reference_embeddings_by_id(page):
    ids = torch.tensor([111, 0, 57, 3])
    images, tokens = page["dataset"].images[ids], page["dataset"].tokens[ids]
    with torch.no_grad():
        want = page["reference"](images, tokens)
    got = page["cache"].lookup(ids)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.as_tensor(g), w, rtol=1.4e-3, atol=1e-6)
