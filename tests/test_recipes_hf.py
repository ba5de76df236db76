"""docs/recipes/huggingface.md: JEST with a transformers SiglipModel, plain loop and HF Trainer.

Runs the page's code (tiny random-weight models, no downloads) and checks what it built.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from jestcore.adapters.torch import JESTSelector, select_batch
from recipe_pages import run_page

import jestcore


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("hf")  # the Trainer's output_dir lands here
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return run_page("huggingface.md")


def trained(model, untrained):
    """Whether training moved some parameter of ``model`` away from its initial value."""
    pairs = zip(model.parameters(), untrained.parameters(), strict=True)
    return any(not torch.equal(a, b) for a, b in pairs)


def test_plain_loop_trains_on_the_selected_quarter(page):
    sub, n = page["sub"], page["N"]
    assert page["selector"].step == 3
    assert sub.indices.numel() == 8 and len(set(sub.indices.tolist())) == 8
    assert 0 <= sub.indices.min() and sub.indices.max() < n
    assert sub.batch["pixel_values"].shape == (8, 3, 32, 32)
    assert all(math.isfinite(x) for x in page["losses"])
    assert trained(page["learner"], page["tiny_siglip"](0))


def test_micro_batched_hf_scoring_matches_one_pass(page):
    learner, batch = page["learner"].eval(), page["random_pairs"](page["N"], 5)
    micro = page["score_forward"](learner, batch, score_batch_size=16)
    with torch.no_grad():
        out = learner(**batch)
    for got, want in zip(micro[:2], (out.image_embeds, out.text_embeds), strict=True):
        torch.testing.assert_close(got, want, rtol=1.4e-3, atol=1e-5)
    assert micro.scale.item() == pytest.approx(math.exp(learner.logit_scale.item()), rel=1e-6)
    assert micro.bias.item() == learner.logit_bias.item()


def test_selection_uses_the_exponentiated_hf_temperature(page):
    learner, reference = page["learner"].eval(), page["reference"]
    batch = page["random_pairs"](page["N"], 6)
    with torch.no_grad():
        lo, ro = learner(**batch), reference(**batch)
    by_hand = [
        jestcore.PairEmbeddings(
            o.image_embeds, o.text_embeds, m.logit_scale.exp()[0], m.logit_bias[0]
        )
        for o, m in ((lo, learner), (ro, reference))
    ]
    pairs = [page["score_forward"](m, batch) for m in (learner, reference)]
    kw = dict(filter_ratio=0.75, n_chunks=4, seed=3)
    assert torch.equal(
        select_batch(torch.arange(32), *pairs, **kw).indices,
        select_batch(torch.arange(32), *by_hand, **kw).indices,
    )


def test_bare_hf_outputs_select_as_score_forward_does(page):
    learner, reference = page["learner"].eval(), page["reference"]
    batch = page["random_pairs"](page["N"], 10)
    pairs = [page["score_forward"](m, batch) for m in (learner, reference)]
    want = JESTSelector(filter_ratio=0.75, n_chunks=4, seed=1)(batch, *pairs)
    assert torch.equal(page["direct"].indices, want.indices)


def test_hf_trainer_selects_every_step(page):
    trainer, result = page["trainer"], page["result"]
    assert trainer.state.global_step == 3 and page["hf_selector"].step == 3
    assert math.isfinite(result.training_loss)
    assert trained(trainer.model, page["tiny_siglip"](0))


class Recording(JESTSelector):
    """A selector that keeps the indices it selected at each step."""

    def __init__(self):
        super().__init__(filter_ratio=0.75, n_chunks=4, seed=0)
        self.picks = []

    def select(self, *args, **kwargs):
        sub = super().select(*args, **kwargs)
        self.picks.append(sub.indices.tolist())
        return sub

    __call__ = select


@pytest.fixture(scope="module")
def interrupted(page, tmp_path_factory):
    """An uninterrupted 4-step run's picks, and a 2-step run's picks and checkpoint folder."""
    cwd = tmp_path_factory.mktemp("hf-resume")
    full, first = Recording(), Recording()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        page["jest_trainer"]("full", max_steps=4, selector=full).train()
        page["jest_trainer"]("cut", max_steps=2, selector=first).train()
    assert first.picks == full.picks[:2]
    return full.picks, cwd


@pytest.mark.parametrize("load_state", [True, False])
def test_hf_trainer_resumes_selecting_exactly(page, interrupted, monkeypatch, load_state):
    """With the page's SaveSelector state the resumed run selects as the uninterrupted one;
    without it (the check can fail) it starts again from step 0's seed."""
    full_picks, cwd = interrupted
    monkeypatch.chdir(cwd)
    resumed = Recording()
    checkpoint = cwd / "cut" / "checkpoint-2"
    if load_state:
        resumed.load_state_dict(json.loads((checkpoint / "jest_selector.json").read_text()))
    output_dir = f"resumed-{load_state}"  # each resumed run writes its own checkpoints
    trainer = page["jest_trainer"](output_dir, max_steps=4, selector=resumed)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.picks) == 2
    assert (resumed.picks == full_picks[2:]) is load_state


def test_clip_section_selects_under_the_softmax_loss(page):
    clip_sub, n = page["clip_sub"], page["N"]
    selector = page["clip_selector"]
    assert selector.step == 3 and selector.config["loss"] == "softmax"
    assert clip_sub.indices.numel() == 8 and len(set(clip_sub.indices.tolist())) == 8
    assert all(math.isfinite(x) for x in page["clip_losses"])
    assert trained(page["clip_learner"], page["tiny_clip"](0))
    # the page's selection is the spec's softmax selection of the CLIP embeddings (bias 0)
    learner, reference = page["clip_learner"].eval(), page["clip_reference"]
    batch = page["random_pairs"](n, 7)
    pairs = [page["score_forward"](m, batch) for m in (learner, reference)]
    assert all(float(p.bias) == 0.0 for p in pairs)
    got = select_batch(batch, *pairs, filter_ratio=0.75, n_chunks=4, seed=3, loss="softmax")
    expected = jestcore.joint_select_embeddings(*pairs, 8, n_chunks=4, seed=3, loss="softmax")
    assert got.indices.tolist() == expected.tolist()
    sigmoid = select_batch(batch, *pairs, filter_ratio=0.75, n_chunks=4, seed=3)
    assert sigmoid.indices.tolist() != got.indices.tolist()
