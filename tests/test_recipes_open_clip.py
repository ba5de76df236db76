"""docs/recipes/open-clip.md: open_clip's forward outputs (tuple and dict forms) read correctly.

open_clip itself is not installed (it imports torchvision, whose registry wheel is a CUDA build
that fails against the CPU torch): the page's stand-in reproduces its forward contract.
"""

from __future__ import annotations

import math

import pytest
import torch
from jestcore.adapters.torch import pair_embeddings, select_batch
from recipe_pages import run_page

import jestcore


@pytest.fixture(scope="module")
def page():
    return run_page("open-clip.md")


def both_forms(page, model):
    """The tuple and the dict outputs of ``model`` on the page's pairs."""
    images, captions = page["images"], page["captions"]
    with torch.no_grad():
        model.output_dict = False
        as_tuple = model(images, captions)
        model.output_dict = True
        as_dict = model(images, captions)
    return as_tuple, as_dict


@pytest.mark.parametrize("bias", [None, -10.0])
def test_tuple_and_dict_forms_give_the_same_pairs(page, bias):
    model = page["OpenCLIPLike"](init_logit_bias=bias)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    as_tuple, as_dict = both_forms(page, model)
    assert len(as_tuple) == (3 if bias is None else 4)
    assert ("logit_bias" in as_dict) == (bias is not None)
    a, b = pair_embeddings(as_tuple), pair_embeddings(as_dict)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)  # the same tensors, read from two containers
    assert a.scale.item() == pytest.approx(20.0, rel=1e-6)  # exp of the log-space parameter
    assert a.bias.item() == (0.0 if bias is None else bias)
    assert a.scale.shape == a.bias.shape == () and not a.bias.requires_grad


def test_page_selects_a_quarter_from_open_clip_outputs(page):
    sub, pairs = page["sub"], page["learner_pairs"]
    assert sub.indices.numel() == 8 and len(set(sub.indices.tolist())) == 8
    assert sub.batch[0].shape == (8, 3, 4, 4)
    assert pairs.bias.item() == -10.0
    assert page["clip_pairs"].bias.item() == 0.0
    converted = select_batch(
        (page["images"], page["captions"]),
        pairs,
        pair_embeddings(page["as_dict"]),
        filter_ratio=0.75,
        n_chunks=4,
        seed=0,
    )
    assert torch.equal(converted.indices, sub.indices)  # the outputs as given = converted


def test_page_score_forward_reads_open_clip_outputs(page):
    scored, pairs = page["scored"], page["learner_pairs"]
    for a, b in zip(scored, pairs, strict=True):
        torch.testing.assert_close(a, b, rtol=1.4e-3, atol=1e-6)  # micro-batched BLAS
    assert scored.scale.shape == () and scored.bias.item() == -10.0


def test_unnormalised_encode_image_output_warns(page):
    model = page["OpenCLIPLike"]()
    with torch.no_grad():
        image = model.encode_image(page["images"])  # open_clip's encode_image: not normalised
        text = model.encode_text(page["captions"], normalize=True)
    with pytest.warns(UserWarning, match=r"output\[0\] is not L2-normalised"):
        pair_embeddings((image, text, model.logit_scale.exp()))


def test_a_clip_model_selects_under_the_softmax_loss(page):
    pairs = [page["clip_pairs"], page["pair_embeddings"](page["clip_reference"])]
    expected = jestcore.joint_select_embeddings(*pairs, 8, n_chunks=4, seed=0, loss="softmax")
    assert page["clip_sub"].indices.tolist() == expected.tolist()
