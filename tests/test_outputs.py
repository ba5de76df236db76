"""jestcore.adapters.torch.pair_embeddings: open_clip, Hugging Face and PairEmbeddings outputs."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from jestcore.adapters.torch import (
    JESTSelector,
    NotNormalizedWarning,
    pair_embeddings,
    precompute_reference_embeddings,
    score_forward,
    select_batch,
)
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

import jestcore

N, D = 6, 8
TEXT = dict(
    vocab_size=100,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def unit(n=N, d=D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)


def hf_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(3, 100, (N, 8), generator=g),
        "pixel_values": torch.randn(N, 3, 32, 32, generator=g),
    }


@pytest.fixture(scope="module")
def siglip():
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=TEXT, vision_config=VISION)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


def test_pair_embeddings_is_returned_as_is():
    pair = jestcore.PairEmbeddings(unit(), unit(seed=1), 10.0, -10.0)
    assert pair_embeddings(pair) is pair


@pytest.mark.parametrize("with_bias", [False, True])
def test_open_clip_tuple(with_bias):
    image, text = unit(), unit(seed=1)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    output = (image, text, log_scale.exp()) + ((torch.tensor(-10.0),) if with_bias else ())
    pair = pair_embeddings(output)
    assert pair.image is image and pair.text is text
    assert pair.scale.shape == () and pair.bias.shape == ()
    assert not pair.scale.requires_grad  # detached: selection never back-propagates
    assert pair.scale.item() == pytest.approx(10.0, rel=1e-6)
    assert pair.bias.item() == (-10.0 if with_bias else 0.0)


@pytest.mark.parametrize("with_bias", [False, True])
def test_open_clip_dict(with_bias):
    output = {
        "image_features": unit(),
        "text_features": unit(seed=1),
        "logit_scale": torch.tensor(10.0),
    }
    if with_bias:
        output["logit_bias"] = torch.tensor([-10.0])  # open_clip SigLIP keeps it 1-element
    pair = pair_embeddings(output)
    assert pair.image is output["image_features"] and pair.text is output["text_features"]
    assert (pair.scale.item(), pair.bias.item()) == (10.0, -10.0 if with_bias else 0.0)
    assert pair.bias.shape == ()


def test_hf_siglip_output_reproduces_hf_logits(siglip):
    with torch.no_grad():
        out = siglip(**hf_inputs())
    pair = pair_embeddings(out, model=siglip)
    assert pair.scale.item() == pytest.approx(10.0, rel=1e-6)
    assert pair.bias.item() == -10.0
    assert pair.scale.shape == () and not pair.scale.requires_grad
    logits = pair.text @ pair.image.T * pair.scale + pair.bias
    torch.testing.assert_close(logits, out.logits_per_text, rtol=1.4e-3, atol=1e-5)


def test_hf_clip_output_has_no_bias():
    torch.manual_seed(0)
    vision = {k: v for k, v in VISION.items()}
    model = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=vision)).eval()
    with torch.no_grad():
        out = model(**hf_inputs())
    pair = pair_embeddings(out, model=model)
    assert pair.bias.item() == 0.0
    assert pair.scale.item() == pytest.approx(math.exp(model.logit_scale.item()), rel=1e-6)
    logits = pair.text @ pair.image.T * pair.scale
    torch.testing.assert_close(logits, out.logits_per_text, rtol=1.4e-3, atol=1e-5)


def test_hf_output_needs_the_model(siglip):
    with torch.no_grad():
        out = siglip(**hf_inputs())
    with pytest.raises(TypeError, match=r"SiglipOutput needs model=.*log space"):
        pair_embeddings(out)
    with pytest.raises(TypeError, match=r"model must be the Hugging Face model.*got Linear"):
        pair_embeddings(out, model=torch.nn.Linear(2, 2))


def test_hf_model_wrapped_like_ddp_or_compile(siglip):
    with torch.no_grad():
        out = siglip(**hf_inputs())

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    expected = pair_embeddings(out, model=siglip)
    got = pair_embeddings(out, model=Wrapper(siglip))
    assert (got.scale.item(), got.bias.item()) == (expected.scale.item(), expected.bias.item())


def test_log_space_scale_changes_the_selection(siglip):
    """The reason for model=: HF's raw logit_scale as the scale selects another sub-batch."""
    siglip = copy.deepcopy(siglip)  # the module's fixture stays as it was
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(30.0))
        out = siglip(**hf_inputs())
    right = pair_embeddings(out, model=siglip)
    wrong = right._replace(scale=siglip.logit_scale.detach().reshape(()))
    torch.manual_seed(1)
    ref = jestcore.PairEmbeddings(unit(seed=3, d=16), unit(seed=4, d=16), 10.0, -10.0)
    picks = {
        name: select_batch(torch.arange(N), learner, ref, batch_size=2, n_chunks=1, seed=0).indices
        for name, learner in (("right", right), ("wrong", wrong))
    }
    assert right.scale.item() == pytest.approx(30.0, rel=1e-5)
    assert picks["right"].tolist() != picks["wrong"].tolist()


@pytest.mark.parametrize(
    ("output", "received"),
    [
        (torch.randn(N, D), "Tensor"),
        ({"image_embeds": torch.randn(N, D)}, "dict"),
        ((unit(), unit()), "tuple of length 2"),
        (tuple(unit() for _ in range(6)), r"tuple of length 6 \(HF return_dict=False"),
        ("siglip", "str"),
    ],
)
def test_anything_else_is_refused_with_a_hint(output, received):
    with pytest.raises(TypeError, match=rf"cannot read a .*{received}.*PairEmbeddings.*model="):
        pair_embeddings(output)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf, torch.tensor(-2.0)])
def test_a_non_positive_or_non_finite_scale_is_refused(scale):
    with pytest.raises(ValueError, match=r"output\[2\] must be a positive finite.*log space"):
        pair_embeddings((unit(), unit(), scale))


def test_bad_bias_and_shapes_are_refused():
    with pytest.raises(ValueError, match=r"output\[3\] must be finite, got nan"):
        pair_embeddings((unit(), unit(), 10.0, math.nan))
    with pytest.raises(ValueError, match=r"output\['logit_scale'\] must be a scalar"):
        pair_embeddings(
            {"image_features": unit(), "text_features": unit(), "logit_scale": torch.ones(2)}
        )
    with pytest.raises(ValueError, match=r"output\[0\] must be \(N, d\)"):
        pair_embeddings((torch.ones(N), unit(), 10.0))
    with pytest.raises(ValueError, match=r"same N pairs.*\(6, 8\) and \(5, 8\)"):
        pair_embeddings((unit(), unit(n=5), 10.0))
    with pytest.raises(TypeError, match=r"output\[1\] must have a floating dtype"):
        pair_embeddings((unit(), torch.ones(N, D, dtype=torch.int64), 10.0))
    with pytest.raises(TypeError, match=r"output\[2\] must be a float or a 0-d tensor"):
        pair_embeddings((unit(), unit(), "10"))


def test_non_unit_norm_warns():
    assert issubclass(NotNormalizedWarning, UserWarning)
    with pytest.warns(NotNormalizedWarning, match=r"output\['text_features'\] is not L2-norm"):
        pair_embeddings(
            {"image_features": unit(), "text_features": 3 * unit(), "logit_scale": 10.0}
        )
    with pytest.warns(NotNormalizedWarning, match=r"output.image is not L2-normalised"):
        pair_embeddings(jestcore.PairEmbeddings(unit() * 0.5, unit(), 10.0, 0.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_unit_norm_does_not_warn(dtype):
    pair = pair_embeddings((unit(n=64, d=256, dtype=dtype), unit(dtype=dtype, d=256, n=64), 10.0))
    assert pair.scale.dtype == dtype  # a Python number takes the embeddings' dtype and device


def test_the_warning_is_shown_once_per_call_site():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: once per location
        for _ in range(3):
            pair_embeddings((2 * unit(), unit(), 10.0))
        pair_embeddings((2 * unit(), unit(), 10.0))  # another line: shown again
    assert [w.category for w in caught] == [NotNormalizedWarning] * 2
    assert all(w.filename == __file__ for w in caught)  # attributed to the caller's line


def test_docstring_examples_run():
    import doctest

    from jestcore.adapters.torch import outputs

    result = doctest.testmod(outputs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_float64_unit_rows_do_not_warn():
    """Norms are checked in the embeddings' precision: float64 rows rounded to float32 would
    differ from 1 by ~1e-7, above float64's tolerance of 6e-8."""
    image = unit(n=1024, d=512, dtype=torch.float64)
    assert (torch.linalg.vector_norm(image.float(), dim=1) - 1).abs().max() > 6e-8
    pair_embeddings((image, image, 10.0))


# --------------------------------------------------------------------------- wiring: where
# select_batch, JESTSelector, score_forward and the cache accept contrastive outputs directly.


class OpenCLIPLike(torch.nn.Module):
    """open_clip's forward contract on linear towers: a (3- or 4-) tuple, or a dict."""

    def __init__(self, seed=0, output_dict=False, bias=None, normalize=True):
        super().__init__()
        torch.manual_seed(seed)
        self.output_dict, self.normalize = output_dict, normalize
        self.visual, self.text = torch.nn.Linear(12, D), torch.nn.EmbeddingBag(100, D)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = None if bias is None else torch.nn.Parameter(torch.tensor(bias))

    def forward(self, image, text):
        image, text = self.visual(image), self.text(text)
        if self.normalize:
            image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        values = (image, text, self.logit_scale.exp())
        values += () if self.logit_bias is None else (self.logit_bias,)
        if self.output_dict:
            keys = ("image_features", "text_features", "logit_scale", "logit_bias")
            return dict(zip(keys, values, strict=False))
        return values


def clip_inputs(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 100, (n, 5), generator=g)


def assert_same_pair(got, want):
    assert isinstance(got, jestcore.PairEmbeddings)
    assert got.scale.shape == () and got.bias.shape == ()
    # Micro-batched forwards differ from one pass by BLAS blocking only (float32).
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1.4e-3, atol=1e-5)


@pytest.mark.parametrize("micro", [None, 4])
def test_score_forward_converts_hf_siglip_outputs(siglip, micro):
    """Micro-batch outputs are converted before concatenation: HF outputs hold (n, n) logits,
    which cannot be concatenated along the examples."""
    batch = hf_inputs(seed=2)
    pair = score_forward(siglip, batch, score_batch_size=micro)
    with torch.no_grad():
        want = pair_embeddings(siglip(**batch), model=siglip)
    assert_same_pair(pair, want)
    assert pair.scale.item() == pytest.approx(math.exp(siglip.logit_scale.item()), rel=1e-6)
    assert pair.bias.item() == siglip.logit_bias.item()


def test_score_forward_converts_hf_clip_outputs_without_bias():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION))
    pair = score_forward(model, hf_inputs(), score_batch_size=4)
    assert pair.bias.item() == 0.0
    assert pair.scale.item() == pytest.approx(math.exp(model.logit_scale.item()), rel=1e-6)
    assert model.training  # eval mode only for the pass


@pytest.mark.parametrize("output_dict", [False, True])
@pytest.mark.parametrize("bias", [None, -10.0])
def test_score_forward_converts_open_clip_outputs(output_dict, bias):
    model = OpenCLIPLike(output_dict=output_dict, bias=bias)
    images, texts = clip_inputs()
    pair = score_forward(model, (images, texts), score_batch_size=4)
    with torch.no_grad():
        want = pair_embeddings(model(images, texts))
    assert_same_pair(pair, want)
    assert pair.bias.item() == (0.0 if bias is None else bias)


def test_score_forward_leaves_other_tuples_alone():
    """A forward's tuple of per-example tensors is concatenated, not read as open_clip's."""
    images, texts = clip_inputs()

    def forward(model, batch):
        return batch[0], batch[0] * 2, batch[0].sum(dim=1)

    out = score_forward(torch.nn.Identity(), (images, texts), forward=forward, score_batch_size=4)
    assert type(out) is tuple and out[2].shape == (N,)
    torch.testing.assert_close(out[1], images * 2)


def test_score_forward_warns_on_unnormalised_embeddings_at_the_callers_line():
    model = OpenCLIPLike(normalize=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_forward(model, clip_inputs(), score_batch_size=4)
    assert [w.category for w in caught] == [NotNormalizedWarning] * 2  # image and text
    assert all(w.filename == __file__ for w in caught)


@pytest.mark.parametrize("output_dict", [False, True])
def test_select_batch_and_selector_accept_open_clip_outputs(output_dict):
    images, texts = clip_inputs(n=16)
    with torch.no_grad():
        learner = OpenCLIPLike(seed=0, output_dict=output_dict, bias=-10.0)(images, texts)
        reference = OpenCLIPLike(seed=1, output_dict=output_dict)(images, texts)  # a 3-tuple
    converted = pair_embeddings(learner), pair_embeddings(reference)
    kw = dict(filter_ratio=0.75, n_chunks=2)
    want = select_batch(images, *converted, seed=4, **kw).indices
    assert torch.equal(select_batch(images, learner, reference, seed=4, **kw).indices, want)
    selector = JESTSelector(**kw, seed=4)
    by_selector = selector(images, learner, reference).indices
    assert torch.equal(by_selector, JESTSelector(**kw, seed=4)(images, *converted).indices)


def test_select_batch_from_hf_outputs_through_score_forward(siglip):
    """The HF recipe: score_forward's PairEmbeddings select as pair_embeddings(model=) does."""
    batch = hf_inputs(seed=3)
    learner = score_forward(siglip, batch, score_batch_size=4)
    with torch.no_grad():
        by_hand = pair_embeddings(siglip(**batch), model=siglip)
    kw = dict(batch_size=2, n_chunks=2, greedy=True, score="hard_learner")
    assert torch.equal(select_batch(batch, learner, **kw).indices,
                       select_batch(batch, by_hand, **kw).indices)  # fmt: skip


def test_select_batch_and_selector_take_hf_outputs_with_their_models(siglip):
    """A bare SiglipOutput / CLIPOutput selects as its pair_embeddings(model=) does, under both
    losses, learner and reference from different models (each scale read from its own)."""
    batch = hf_inputs(seed=5)
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION)).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(30.0))
        outputs = {"siglip": siglip(**batch), "clip": clip(**batch)}
    models = {"siglip": siglip, "clip": clip}
    for learner, reference, loss in [("siglip", "clip", "sigmoid"), ("clip", "siglip", "softmax")]:
        kw = dict(batch_size=3, n_chunks=3, seed=7, loss=loss)
        converted = (pair_embeddings(outputs[learner], model=models[learner]),
                     pair_embeddings(outputs[reference], model=models[reference]))  # fmt: skip
        want = select_batch(batch, *converted, **kw)
        bare = (batch, outputs[learner], outputs[reference])

        def with_models(learner_model, reference_model):
            return {
                "learner_model": models[learner_model],
                "reference_model": models[reference_model],
            }

        got = select_batch(*bare, **kw, **with_models(learner, reference))
        assert torch.equal(got.indices, want.indices)
        torch.testing.assert_close(got.stats, want.stats, rtol=0, atol=0)
        # Each output's temperature and bias are read from the model given for it.
        swapped = select_batch(*bare, **kw, **with_models(reference, learner))
        assert not torch.allclose(swapped.stats["score_all"], want.stats["score_all"])
        selector = JESTSelector(batch_size=3, n_chunks=3, seed=7, loss=loss)
        by_selector = selector(*bare, **with_models(learner, reference))
        want_selector = JESTSelector(batch_size=3, n_chunks=3, seed=7, loss=loss)(batch, *converted)
        assert torch.equal(by_selector.indices, want_selector.indices)


def test_select_batch_names_what_an_hf_output_needs(siglip):
    with torch.no_grad():
        out = siglip(**hf_inputs())
    with pytest.raises(
        TypeError,
        match=r"learner is a Hugging Face SiglipOutput.*log space.*"
        r"learner_model=model.*score_forward\(model, batch\)",
    ):
        select_batch(torch.arange(N), out, score="hard_learner", batch_size=2, seed=0)
    with pytest.raises(TypeError, match=r"reference is a Hugging Face SiglipOutput.*reference_m"):
        JESTSelector(batch_size=2, score="easy_reference")(torch.arange(N), None, out)
    with pytest.raises(TypeError, match=r"model must be the Hugging Face model.*got Linear"):
        select_batch(torch.arange(N), out, score="hard_learner", batch_size=2, seed=0,
                     learner_model=torch.nn.Linear(2, 2))  # fmt: skip


@pytest.mark.parametrize(
    ("output", "error", "match"),
    [
        (torch.rand(N, 7), ValueError, r"learner must be 1-D, got shape \(6, 7\).*per-token"),
        (torch.tensor(0.5), ValueError, r"learner must be 1-D, got a 0-d tensor.*reduction="),
        ({"logits": torch.rand(N)}, TypeError, r"open_clip output.*got dict with keys \['logits'"),
        ((unit(), unit()), TypeError, r"CLIPOutput with learner_model=model.*tuple of length 2"),
        ((unit(), unit(), torch.ones(N)), TypeError, r"got tuple of length 3"),
        ((unit(), unit(), -1.0), ValueError, r"learner\[2\] must be a positive finite"),
    ],
)
def test_select_batch_refuses_other_outputs_naming_them(output, error, match):
    with pytest.raises(error, match=match):
        select_batch(torch.arange(N), output, score="hard_learner", batch_size=2, seed=0)


def test_select_batch_warns_at_the_callers_line_for_unnormalised_outputs():
    with pytest.warns(NotNormalizedWarning, match=r"learner\[0\] is not L2") as caught:
        select_batch(torch.arange(N), (2 * unit(), unit(), 10.0), score="hard_learner",
                     batch_size=2, seed=0)  # fmt: skip
    assert caught[0].filename == __file__


def test_the_cache_default_forward_reads_hf_outputs(siglip, tmp_path):
    inputs = hf_inputs(seed=4)
    loader = [(torch.arange(N)[s], {k: v[s] for k, v in inputs.items()})
              for s in (slice(0, 4), slice(4, N))]  # fmt: skip
    cache = precompute_reference_embeddings(siglip, loader, tmp_path / "c", progress=False)
    with torch.no_grad():
        want = pair_embeddings(siglip(**inputs), model=siglip)
    got = cache.lookup(torch.arange(N))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float32), b,
                                   rtol=1.4e-3, atol=1e-5)  # fmt: skip
