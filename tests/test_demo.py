"""The demo application (config, recipe, compute model, runner, report and CLI), the neutral
recipe it shares with the trainers, and the library's independence from it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jestcore.adapters import recipe
from jestcore.adapters.demo import app as demo
from jestcore.adapters.demo import costs
from jestcore.adapters.demo.digits import Digits, make_digits
from jestcore.adapters.demo.text import VOCAB

import jestcore

REQUIRED_METHOD_KEYS = {"final_accuracy", "steps_to_target", "flops_to_target"}


# ----------------------------------------------------------------------------------------------
# The library never imports the demo.


def test_the_library_and_the_trainers_load_no_module_of_the_demo() -> None:
    code = (
        "import sys\n"
        "import jestcore, jestcore.adapters.recipe\n"
        "import jestcore.adapters.torch, jestcore.adapters.torch.trainer\n"
        "import jestcore.adapters.jax, jestcore.adapters.jax.trainer\n"
        "print(sorted(m for m in sys.modules if m.startswith('jestcore.adapters.demo')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_demo_shares_the_one_registry_of_the_recipe() -> None:
    assert demo.METHODS is recipe.METHODS and demo.METHOD_SPECS is recipe.METHOD_SPECS
    assert demo.MethodSpec is recipe.MethodSpec
    assert costs.super_batch_size is recipe.super_batch_size


@pytest.mark.parametrize("score", ["learnability", "hard_learner", "easy_reference"])
def test_independent_selection_is_one_chunk_and_honours_the_score(score: str) -> None:
    """A method's selection call is (score, spec.n_chunks): for an independent method that is
    the spec's independent selection on each pair's own score, whatever the score."""
    rng = np.random.default_rng(2)
    learner, reference = _embeddings(rng, 60, 8), _embeddings(rng, 60, 8)
    spec = recipe.MethodSpec("x", score, "independent_diagonal", 1, "")
    assert spec.n_chunks(16) == 1 and recipe.METHOD_SPECS["jest"].n_chunks(16) == 16
    got = jestcore.joint_select_embeddings(
        learner if spec.uses_learner else None,
        reference if spec.uses_reference else None,
        12,
        n_chunks=spec.n_chunks(4),
        score=score,
        seed=3,
    )

    def own(m: jestcore.PairEmbeddings) -> np.ndarray:
        logit = m.scale * np.sum(m.image * m.text, axis=1) + m.bias
        return np.logaddexp(0.0, -logit)

    diagonal = {
        "learnability": own(learner) - own(reference),
        "hard_learner": own(learner),
        "easy_reference": -own(reference),
    }[score]
    np.testing.assert_array_equal(got, jestcore.independent_select(diagonal, 12, seed=3))
    assert recipe.METHOD_SPECS["independent"].score == "learnability"  # the paper's baseline


def test_recipe_super_batch_size_inverts_the_spec_sub_batch_size() -> None:
    for b in (1, 2, 7, 64, 100):
        for f in (0.0, 0.3, 0.5, 0.75, 0.8, 0.9):
            n = recipe.super_batch_size(b, f)
            assert jestcore.sub_batch_size(n, filter_ratio=f) == b, (b, f, n)
    with pytest.raises(ValueError, match="filter_ratio"):
        recipe.super_batch_size(8, 1.0)
    with pytest.raises(TypeError, match="batch_size"):
        recipe.super_batch_size(8.0, 0.5)


def test_recipe_draw_rows() -> None:
    a = recipe.draw_rows(50, 20, seed=1, step=2)
    assert a.dtype == np.int64 and np.unique(a).size == 20
    np.testing.assert_array_equal(a, recipe.draw_rows(50, 20, seed=1, step=2))
    assert not np.array_equal(a, recipe.draw_rows(50, 20, seed=1, step=2, stream=2))
    with pytest.raises(ValueError, match="size"):
        recipe.draw_rows(10, 11, seed=0, step=0)


# ----------------------------------------------------------------------------------------------
# Config and shared recipe.


def test_methods_and_specs_agree_with_the_cost_model() -> None:
    order = "uniform hard_learner easy_reference independent jest flexi_jest"  # report order
    assert demo.METHODS == tuple(order.split())
    assert set(demo.METHOD_SPECS) == set(demo.METHODS)
    for name, spec in demo.METHOD_SPECS.items():
        assert spec.name == name
        assert spec.score is None or spec.score in costs.SCORES
        assert spec.selection is None or spec.selection in costs.SELECTIONS
    assert not demo.METHOD_SPECS["uniform"].uses_learner
    assert not demo.METHOD_SPECS["easy_reference"].uses_learner
    assert not demo.METHOD_SPECS["hard_learner"].uses_reference
    assert demo.METHOD_SPECS["flexi_jest"].factor == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 1.5}, TypeError, "steps"),
        ({"seeds": 0}, ValueError, "seeds"),
        ({"methods": ("jest",)}, ValueError, "uniform"),
        ({"methods": ("uniform", "magic")}, ValueError, "magic"),
        ({"methods": ["uniform"]}, TypeError, "tuple"),
        ({"methods": ("uniform", "uniform")}, ValueError, "repeat"),
        ({"filter_ratio": 1.0}, ValueError, "filter_ratio"),
        ({"filter_ratio": -0.1}, ValueError, "filter_ratio"),
        ({"n_chunks": 65}, ValueError, "n_chunks"),
        ({"learning_rate": math.nan}, ValueError, "learning_rate"),
        ({"smoothing_window": 4}, ValueError, "odd"),
        ({"eval_every": 0}, ValueError, "eval_every"),
        ({"data": {}}, TypeError, "DigitsConfig"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        demo.DemoConfig(**kwargs)


def test_config_defaults_follow_the_prototype() -> None:
    c = demo.DemoConfig()
    assert (c.steps, c.seeds, c.batch_size, c.filter_ratio, c.n_chunks) == (1500, 3, 64, 0.8, 16)
    assert c.super_batch == 320
    assert c.init_log_scale == pytest.approx(math.log(10.0)) and c.init_bias == -10.0
    assert c.data.corruption_rate == 0.7
    assert json.loads(json.dumps(c.as_dict()))["data"]["corruption_mix"] == [0.4, 0.2, 0.2, 0.2]
    q = demo.DemoConfig.quick(seeds=1)
    assert q.seeds == 1 and q.steps < c.steps and "uniform" in q.methods


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    c = demo.DemoConfig(learning_rate=2e-3, warmup_fraction=0.1)
    rates = np.array([demo.learning_rate(s, 200, c) for s in range(200)])
    warm = 20
    np.testing.assert_allclose(rates[:warm], 2e-3 * np.arange(1, warm + 1) / warm, rtol=1e-12)
    assert np.all(np.diff(rates[warm:]) <= 0)
    assert rates.max() == pytest.approx(2e-3)
    # Cosine: half-way through the decay the rate is half the peak.
    assert demo.learning_rate(warm + 90, 200, c) == pytest.approx(1e-3)
    assert 0 < rates[-1] < 1e-6


def test_eval_steps_cover_start_interval_and_end() -> None:
    assert demo.eval_steps(demo.DemoConfig(steps=100, eval_every=25)) == [0, 25, 50, 75, 100]
    assert demo.eval_steps(demo.DemoConfig(steps=7, eval_every=5)) == [0, 5, 7]


def test_super_batches_are_distinct_reproducible_and_fresh_per_step() -> None:
    c = demo.DemoConfig()
    a = demo.super_batch_indices(1000, c, 0, 5)
    assert a.dtype == np.int64 and a.shape == (320,)
    assert np.unique(a).size == 320 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, demo.super_batch_indices(1000, c, 0, 5))
    assert not np.array_equal(a, demo.super_batch_indices(1000, c, 0, 6))
    assert not np.array_equal(a, demo.super_batch_indices(1000, c, 1, 5))
    with pytest.raises(ValueError, match="super-batch"):
        demo.super_batch_indices(100, c, 0, 0)
    r = demo.reference_batch_indices(40, c, 0, 0)
    assert np.unique(r).size == 40  # a split smaller than b gives all of it


def test_super_batches_sample_the_pool_uniformly() -> None:
    c = demo.DemoConfig(batch_size=8, n_chunks=4)  # N = 40 of 200 rows
    counts = np.zeros(200)
    for step in range(2000):
        counts[demo.super_batch_indices(200, c, 3, step)[: c.batch_size]] += 1
    expected = 2000 * 8 / 200
    # Each count is ~Binomial(2000, 0.04): sd ~ 8.8; a chi-square over 200 cells.
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert 140 < chi2 < 270, chi2


def _embeddings(rng: np.random.Generator, n: int, d: int) -> jestcore.PairEmbeddings:
    def unit() -> np.ndarray:
        x = rng.normal(size=(n, d))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return jestcore.PairEmbeddings(unit(), unit(), 10.0, -5.0)


def test_select_sub_batch_matches_the_spec_and_a_literal_independent_oracle() -> None:
    rng = np.random.default_rng(0)
    c = demo.DemoConfig(batch_size=16, n_chunks=4)
    learner, reference = _embeddings(rng, 80, 8), _embeddings(rng, 80, 8)
    for method, score in (
        ("jest", "learnability"),
        ("hard_learner", "hard_learner"),
        ("easy_reference", "easy_reference"),
    ):
        got = demo.select_sub_batch(method, learner, reference, c, 7)
        want = jestcore.joint_select_embeddings(
            learner, reference, 16, n_chunks=4, score=score, seed=7
        )
        np.testing.assert_array_equal(got, want)
    # Independent: each pair's own learnability, literally.
    own = []
    for i in range(80):
        li = 10.0 * float(learner.image[i] @ learner.text[i]) - 5.0
        ri = 10.0 * float(reference.image[i] @ reference.text[i]) - 5.0
        own.append(math.log1p(math.exp(-li)) - math.log1p(math.exp(-ri)))
    got = demo.select_sub_batch("independent", learner, reference, c, 7)
    np.testing.assert_array_equal(got, jestcore.independent_select(np.array(own), 16, seed=7))
    np.testing.assert_array_equal(demo.select_sub_batch("uniform", None, None, c, 0), np.arange(16))
    with pytest.raises(ValueError, match="reference"):
        demo.select_sub_batch("jest", learner, None, c, 0)
    with pytest.raises(ValueError, match="method"):
        demo.select_sub_batch("best", learner, reference, c, 0)


def test_selection_seed_is_fold_in() -> None:
    assert demo.selection_seed(3, 10) == jestcore.fold_in(3, 10)
    assert demo.selection_seed(3, 10) != demo.selection_seed(3, 11)


def test_evaluate_against_a_literal_count() -> None:
    data = make_digits(demo.DemoConfig.quick().data)
    test = data.test
    n = len(test)
    rng = np.random.default_rng(1)
    prompts = np.eye(10, 16)
    # Images point at their class prompt, except every third, which points at class + 1.
    wrong = np.arange(n) % 3 == 0
    target = np.where(wrong, (test.labels + 1) % 10, test.labels)
    image = prompts[target] + 0.01 * rng.normal(size=(n, 16))
    text = prompts[test.caption_labels]
    m = demo.evaluate(jestcore.PairEmbeddings(image, text, 1.0, 0.0), prompts, test)
    assert m.zero_shot == pytest.approx(1 - wrong.mean())
    # The nearest caption names the class the image points at.
    hits = sum(test.labels[i] == target[i] for i in range(n))
    assert m.recall_at_1 == pytest.approx(hits / n)
    with pytest.raises(ValueError, match="prompts"):
        demo.evaluate(jestcore.PairEmbeddings(image, text, 1.0, 0.0), prompts[:5], test)


# ----------------------------------------------------------------------------------------------
# Compute model.


def test_model_flops_hand_count() -> None:
    c = demo.DemoConfig(image_hidden=100, embed_dim=10)
    text = 2 * len(VOCAB) * 10
    assert demo.model_flops(c) == 2 * 64 * 100 + 2 * 100 * 10 + text
    assert demo.model_flops(c, 2) == 2 * 16 * 100 + 2 * 100 * 10 + text


def test_method_step_flops() -> None:
    c = demo.DemoConfig()
    f, f4 = demo.model_flops(c), demo.model_flops(c, 2)
    uniform = demo.method_step_flops("uniform", c)
    assert uniform.total == 3 * 64 * f and uniform.scoring == 0
    jest = demo.method_step_flops("jest", c)
    assert jest.learner_scoring == 320 * f and jest.reference_scoring == 0  # cached
    assert jest.training == 2 * 64 * f and jest.selection > 0  # the scoring forward re-used
    flexi = demo.method_step_flops("flexi_jest", c)
    assert flexi.learner_scoring == 320 * f4 and flexi.selection == jest.selection
    assert flexi.training == 3 * 32 * f + 3 * 32 * f4  # half at 8x8, half at 4x4
    easy = demo.method_step_flops("easy_reference", c)
    assert easy.learner_scoring == 0 and 0 < easy.selection < jest.selection
    assert easy.training == uniform.training  # no learner forward to re-use
    independent = demo.method_step_flops("independent", c)
    assert independent.selection == costs.selection_flops(
        320, 64, learner_dim=32, reference_dim=32, selection="independent_diagonal"
    )


# ----------------------------------------------------------------------------------------------
# Summary, report, figure.


def _curve(values: list[float], steps: list[int]) -> demo.Curve:
    return demo.Curve(np.array(steps), np.array(values), np.array(values) * 0.9, 1.0)


def test_summarize_targets_steps_and_flops() -> None:
    c = demo.DemoConfig(steps=400, eval_every=100, seeds=2, methods=("uniform", "jest"))
    steps = [0, 100, 200, 300, 400]
    curves = {
        "uniform": [
            _curve([0.1, 0.3, 0.5, 0.6, 0.7], steps),
            _curve([0.1, 0.3, 0.5, 0.6, 0.8], steps),
        ],
        "jest": [
            _curve([0.1, 0.6, 0.8, 0.8, 0.8], steps),
            _curve([0.1, 0.2, 0.3, 0.3, 0.3], steps),
        ],
    }
    r = demo.summarize(curves, c, pool_size=1000)
    window = c.smoothing_window
    target = costs.final_value([0.1, 0.3, 0.5, 0.6, 0.75], window=window)
    assert r["target_accuracy"] == pytest.approx(target)
    jest = r["methods"]["jest"]
    assert REQUIRED_METHOD_KEYS <= set(jest)
    first = costs.steps_to_target(steps, [0.1, 0.6, 0.8, 0.8, 0.8], target, window=window)
    assert jest["steps_to_target"] == [first, None]
    per_step = demo.method_step_flops("jest", c).total
    offset = 1000 * demo.model_flops(c)  # the cached reference pass
    assert jest["flops_to_target"][0] == pytest.approx(offset + first * per_step)
    assert jest["flops_to_target"][1] is None
    uniform = r["methods"]["uniform"]
    assert uniform["flops_offset"] == 0  # uniform needs no reference
    assert uniform["final_accuracy"] == [
        pytest.approx(costs.final_value([0.1, 0.3, 0.5, 0.6, 0.7], window=window)),
        pytest.approx(costs.final_value([0.1, 0.3, 0.5, 0.6, 0.8], window=window)),
    ]
    json.dumps(r)  # JSON-ready
    with pytest.raises(ValueError, match="uniform"):
        demo.summarize({"jest": curves["jest"]}, c, pool_size=1000)
    bad = {**curves, "jest": [_curve([0.1, 0.2], [0, 100])]}
    with pytest.raises(ValueError, match="same steps"):
        demo.summarize(bad, c, pool_size=1000)


def test_table_and_figure(tmp_path: Path) -> None:
    c = demo.DemoConfig(steps=200, eval_every=100, seeds=1, methods=("uniform", "jest"))
    curves = {
        "uniform": [_curve([0.1, 0.5, 0.6], [0, 100, 200])],
        "jest": [_curve([0.1, 0.7, 0.8], [0, 100, 200])],
    }
    r = demo.summarize(curves, c, pool_size=1000)
    table = demo.format_table(r)
    assert "uniform" in table and "jest" in table and "steps to target" in table
    assert "never" not in table
    demo.plot_curves(r, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------
# The runner, with an instant NumPy trainer that follows the protocol.


class _CountingTrainer:
    """A protocol-following trainer whose "learning" is a fixed function of the method.

    It checks the runner's bookkeeping: one reference per seed, one cached pool pass per seed,
    the reference passed exactly to the methods that use it, the same steps everywhere.
    """

    __name__ = "counting"

    def __init__(self) -> None:
        self.references: list[int] = []
        self.pool_embeds = 0
        self.calls: list[tuple[str, int, bool]] = []

    def train_reference(self, data: Digits, config: demo.DemoConfig, seed: int, *, on_step=None):
        self.references.append(seed)
        if on_step is not None:
            on_step(config.reference_steps)
        return ("reference", seed)

    def embed(self, model, images, tokens, *, factor=1):
        if len(images) > 1000:
            self.pool_embeds += 1
        rng = np.random.default_rng(len(images))
        x = rng.normal(size=(len(images), 4)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return jestcore.PairEmbeddings(x, x, 10.0, -10.0)

    def train_learner(self, data, reference, method, config, seed, *, on_eval=None):
        self.calls.append((method, seed, reference is not None))
        rate = {"uniform": 1.0, "jest": 3.0}.get(method, 2.0)
        evaluations = []
        for s in demo.eval_steps(config):
            acc = 0.9 * (1 - math.exp(-rate * s / config.steps)) + 0.01 * seed
            m = demo.Metrics(acc, acc)
            evaluations.append((s, m))
            if on_eval is not None:
                on_eval(s, m)
        return demo.Curve.from_evaluations(evaluations, 0.5)


def test_run_demo_bookkeeping_and_outputs(tmp_path: Path) -> None:
    trainer = _CountingTrainer()
    c = demo.DemoConfig.quick(methods=("uniform", "easy_reference", "jest"), seeds=2)
    r = demo.run_demo(c, backend=trainer, out=tmp_path, progress=False, workers=1)
    assert trainer.references == [0, 1] and trainer.pool_embeds == 2
    assert sorted(trainer.calls) == sorted(
        (m, s, m != "uniform") for s in (0, 1) for m in ("uniform", "easy_reference", "jest")
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(r))
    assert set(saved["methods"]) == {"uniform", "easy_reference", "jest"}
    for entry in saved["methods"].values():
        assert REQUIRED_METHOD_KEYS <= set(entry)
        assert all(len(entry[k]) == 2 for k in REQUIRED_METHOD_KEYS)
    assert saved["backend"] == "counting" and len(saved["reference"]["zero_shot"]) == 2
    # The fake jest learns 3x as fast as the fake uniform: it reaches the target first.
    jest, uniform = saved["methods"]["jest"], saved["methods"]["uniform"]
    assert jest["mean_curve_steps_to_target"] < uniform["mean_curve_steps_to_target"]
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_run_demo_without_reference_methods_trains_no_reference() -> None:
    trainer = _CountingTrainer()
    demo.run_demo(
        demo.DemoConfig.quick(methods=("uniform", "hard_learner"), seeds=1),
        backend=trainer,
        progress=False,
        workers=1,
    )
    assert trainer.references == [] and trainer.calls == [
        ("uniform", 0, False),
        ("hard_learner", 0, False),
    ]


def test_load_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend"):
        demo.load_backend("tensorflow")
    monkeypatch.setitem(demo.BACKENDS, "jax", "jestcore.adapters.no_such_trainer")
    with pytest.raises(ImportError, match="jax trainer"):
        demo.load_backend("jax")
    fake = types.ModuleType("jestcore_fake_trainer")
    monkeypatch.setitem(sys.modules, "jestcore_fake_trainer", fake)
    monkeypatch.setitem(demo.BACKENDS, "jax", "jestcore_fake_trainer")
    with pytest.raises(ImportError, match="train_reference"):
        demo.load_backend("jax")


# ----------------------------------------------------------------------------------------------
# The command line (options; the real quick run is in test_torch_trainer.py).


def test_cli_options_build_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jestcore.adapters.demo import cli

    seen: dict[str, Any] = {}

    def fake_run(
        config: demo.DemoConfig, *, backend: Any, out: Any, progress: bool, workers: Any
    ) -> dict:
        seen.update(config=config, backend=backend, out=out, progress=progress, workers=workers)
        curves = {m: [_curve([0.1, 0.5], [0, config.steps])] for m in config.methods}
        return {**demo.summarize(curves, config, pool_size=1000), "wall_seconds": 1.0}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    args = [
        "demo",
        "--steps",
        "40",
        "--seeds",
        "2",
        "--filter-ratio",
        "0.5",
        "--batch-size",
        "32",
        "--methods",
        "jest",
        "independent",
        "--corruption-rate",
        "0.3",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--workers",
        "1",
    ]
    assert cli.main(args) == 0
    c = seen["config"]
    assert (c.steps, c.seeds, c.filter_ratio, c.batch_size) == (40, 2, 0.5, 32)
    assert c.methods == ("uniform", "jest", "independent")
    assert c.data.corruption_rate == 0.3
    assert c.data.curated_augmentations == demo.DemoConfig().data.curated_augmentations
    assert seen["progress"] is False and Path(seen["out"]) == tmp_path and seen["workers"] == 1
    assert seen["backend"].__name__ == demo.BACKENDS["torch"]

    assert cli.main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert seen["config"] == demo.DemoConfig.quick() and seen["progress"] is True
    assert seen["workers"] == demo.default_workers()


def test_results_config_records_the_recipe() -> None:
    c = demo.DemoConfig(steps=100, eval_every=100, seeds=1, methods=("uniform", "flexi_jest"))
    curves = {m: [_curve([0.1, 0.5], [0, 100])] for m in c.methods}
    recorded = demo.summarize(curves, c, pool_size=1000)["config"]["recipe"]
    assert recorded["costs"] == costs.CONVENTION and "re-use" in recorded["costs"]
    assert recorded["adam_beta2"] == {"uniform": 0.999, "flexi_jest": 0.95}
    assert "[::2]" in recorded["flexi_split"] and "[1::2]" in recorded["flexi_split"]
    assert recorded["reweighting"] is False
    json.dumps(recorded)


def test_cli_bare_prints_help_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    from jestcore.adapters.demo import cli

    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jestcore") and "demo" in out and "select-demo" in out


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from jestcore.adapters.demo import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"jestcore {jestcore.__version__}"


def test_cli_console_script_runs_bare_and_version() -> None:

    script = Path(sys.executable).parent / "jestcore"
    assert script.exists(), script
    bare = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: jestcore"), bare.stderr
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert version.returncode == 0 and version.stdout.strip() == f"jestcore {jestcore.__version__}"


def _option_helps(parser: Any) -> dict[str, str]:
    """Every option of the parser and its sub-parsers, with its formatted help line(s)."""
    import argparse

    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update({f"{name} {k}": h for k, h in _option_helps(sub).items()})
        elif action.option_strings and action.default is not argparse.SUPPRESS:
            formatter = parser._get_formatter()
            found[action.option_strings[-1]] = formatter._expand_help(action)
    return found


def test_cli_every_option_has_help_with_its_default() -> None:
    from jestcore.adapters.demo import cli

    parser = cli._parser()
    helps = _option_helps(parser)
    assert len(helps) >= 18  # 12 demo options + 6 select-demo options
    for option, text in helps.items():
        assert "default" in text and "None" not in text, (option, text)
    assert "default: 1500; --quick: 300" in helps["demo --steps"]
    assert "default: 8192" in helps["select-demo --n"]
    assert "``" not in parser.description and "``" not in parser.format_help()


def test_progress_to_a_non_terminal_is_line_based(capsys: pytest.CaptureFixture[str]) -> None:
    # capsys' stderr is not a terminal, as in CI logs.
    with demo._bar(300, "jest seed 0", True, 1) as bar:
        for step in range(25, 301, 25):
            bar.update(step - bar.n)
            bar.set_postfix(acc="0.500")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 1 < len(lines) <= 10 and lines[-1] == "jest seed 0: 300/300 (acc=0.500)"
    with demo._bar(300, "hidden", False, 1) as bar:
        bar.update(300)
    assert capsys.readouterr().err == ""


def test_cli_reports_bad_options_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from jestcore.adapters.demo import cli

    assert cli.main(["demo", "--filter-ratio", "1.5", "--out", str(tmp_path)]) == 2
    assert "filter_ratio" in capsys.readouterr().err
    assert cli.main(["demo", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers" in capsys.readouterr().err
    monkeypatch.setitem(demo.BACKENDS, "jax", "jestcore.adapters.no_such_trainer")
    assert cli.main(["demo", "--backend", "jax", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "jax trainer" in err and "--backend" in err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--backend", "tensorflow"])


def test_select_demo_sizes_the_sub_batch_with_the_spec_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from jestcore.adapters.demo import cli

    assert cli.main(["select-demo", "--n", "90", "--seeds", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"keep b = {jestcore.sub_batch_size(90, filter_ratio=0.8)} " in out  # 18
    summary = json.loads((tmp_path / "synthetic.json").read_text())
    assert set(summary) == {"uniform", "independent", "joint"}
    assert cli.main(["select-demo", "--filter-ratio", "1.5"]) == 2
    assert "filter_ratio must be in [0, 1)" in capsys.readouterr().err
