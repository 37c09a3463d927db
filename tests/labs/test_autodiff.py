"""The autodiff lab: its measured claims from one --quick run through the CLI (gradient parity with torch.autograd,
finite differences, the same accuracy trained both ways, the cost of a gradient), and the engine itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlforge.labs import autodiff_engine as ad
from dlforge.labs.autodiff import FD_TOLERANCE, PARITY_TOLERANCE
from tests.labs.conftest import run_quick


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    return run_quick("autodiff", tmp_path_factory.mktemp("lab") / "autodiff")


def test_every_op_matches_torch_autograd(quick: tuple) -> None:
    _, results, _ = quick
    ops = {r["op"] for r in results["ops"]}
    for name in ("add", "mul", "matmul", "relu", "tanh", "reshape", "sum", "conv2d", "cross-entropy"):
        assert any(op.startswith(name) for op in ops), name
    for r in results["ops"]:  # measured ≤ 4e-16: float64 rounding, nothing more
        assert r["grad_rel_error"] <= PARITY_TOLERANCE and r["output_rel_error"] <= PARITY_TOLERANCE, r


def test_whole_networks_match_torch_and_finite_differences(quick: tuple) -> None:
    _, results, _ = quick
    assert {r["network"] for r in results["networks"]} == {"mlp", "cnn"}
    for r in results["networks"]:
        assert r["max_grad_rel_error"] <= PARITY_TOLERANCE and r["loss_rel_error"] <= PARITY_TOLERANCE
    for r in results["finite_differences"]:  # measured ≤ 3e-8 at h = 1e-6
        assert r["max_rel_error"] <= FD_TOLERANCE, r
    assert all(results["passed"].values())


def test_trained_both_ways_to_the_same_accuracy(quick: tuple) -> None:
    _, results, _ = quick
    t = results["training"]
    assert t["test_accuracy"]["engine"] == t["test_accuracy"]["torch"] > 0.9  # measured 0.936
    assert t["test_predictions_differing"] == 0
    assert t["max_weight_difference"] < 1e-10  # the same trajectory up to float64 rounding
    assert t["train_loss"]["engine"][-1] < 0.5 * t["train_loss"]["engine"][0]


def test_a_gradient_costs_a_few_forward_passes(quick: tuple) -> None:
    _, results, _ = quick
    for r in results["cost"]:
        # Measured 2.3–2.5 for the engine (Griewank & Walther's bound: 3–4); by finite differences it would be the
        # number of parameters plus one (thousands).
        assert 1.0 < r["engine"]["ratio"] < 8.0, r
        assert r["finite_difference_ratio"] > 1000


def test_files(quick: tuple) -> None:
    out, results, output = quick
    for name in ("parity.png", "training.png"):
        assert name in results["files"]
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    summary = (out / "summary.md").read_text()
    assert "Griewank & Walther" in summary and "| conv2d, 3x3, stride 2, padding 0 |" in summary
    assert "MLP test accuracy, engine / torch" in output


def test_engine_gradients_on_a_shared_subexpression() -> None:
    """A tensor used twice gets both uses' gradients: d/dx of sum(x ⊙ x + x) is 2x + 1."""
    x = ad.Tensor(np.array([[1.0, -2.0], [0.5, 3.0]]))
    ad.sum_(ad.add(ad.mul(x, x), x)).backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)


def test_engine_conv_and_cross_entropy_against_torch() -> None:
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 9, 7)), rng.standard_normal((5, 3, 3, 3))
    for stride, padding in ((1, 0), (2, 1), (3, 2)):
        mine_x, mine_w = ad.Tensor(x), ad.Tensor(w)
        out = ad.conv2d(mine_x, mine_w, stride, padding)
        upstream = rng.standard_normal(out.shape)
        out.backward(upstream)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ref = F.conv2d(tx, tw, stride=stride, padding=padding)
        ref.backward(torch.as_tensor(upstream))
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mine_x.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mine_w.grad, tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    logits = ad.Tensor(rng.standard_normal((4, 6)) * 50)  # large logits: log-softmax must not overflow
    targets = np.array([0, 5, 2, 2])
    loss = ad.cross_entropy(logits, targets)
    loss.backward()
    t = torch.tensor(logits.data, requires_grad=True)
    reference = F.cross_entropy(t, torch.as_tensor(targets))
    reference.backward()
    assert np.isfinite(loss.data) and abs(float(loss.data) - reference.item()) < 1e-12
    np.testing.assert_allclose(logits.grad, t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_backward_of_a_non_scalar_needs_a_seed() -> None:
    with pytest.raises(ValueError, match="scalar"):
        ad.relu(ad.Tensor(np.ones(3))).backward()
