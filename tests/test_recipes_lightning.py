"""docs/recipes/lightning.md: JEST in a LightningModule, with the selector in the checkpoint.

Runs the page's code (which itself asserts that the resumed run selects what the uninterrupted
run selected) and checks it again, and that the check can fail.
"""

from __future__ import annotations

import pytest
import torch
from recipe_pages import run_page

# Lightning 2.6 calls torch.utils._pytree.LeafSpec, which torch 2.13 deprecates (the page filters
# it too, for its own run; a test body runs under pytest's fresh filters).
pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lightning")  # jest.ckpt lands here
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        namespace = run_page("lightning.md")
        namespace["cwd"] = cwd
        return namespace


def test_every_step_trains_on_a_selected_quarter(page):
    full = page["full"]
    assert len(full.picks) == 8 and full.selector.step == 8
    for picks in full.picks:
        assert len(picks) == 8 and len(set(picks)) == 8 and all(0 <= i < 32 for i in picks)


def test_resume_selects_exactly_as_the_uninterrupted_run(page):
    assert page["first"].picks == page["full"].picks[:4]
    assert page["resumed"].picks == page["full"].picks[4:]
    for a, b in zip(
        page["resumed"].learner.parameters(), page["full"].learner.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1.4e-3, atol=1e-6)


def test_without_the_selector_state_the_resumed_run_selects_otherwise(page, monkeypatch):
    """The checkpoint hooks matter: a module that drops the selector state restarts at step 0."""

    class Forgetful(page["JESTModule"]):
        def on_load_checkpoint(self, checkpoint):
            pass

    monkeypatch.chdir(page["cwd"])
    resumed, _ = page["fit"](max_epochs=2, ckpt_path="jest.ckpt", module_class=Forgetful)
    assert resumed.selector.step == 4
    assert resumed.picks != page["full"].picks[4:]
