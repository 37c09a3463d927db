"""Registries: names, suggestions, and one test over every registered model."""

from __future__ import annotations

import pytest
import torch

from dlforge.errors import DlforgeError
from dlforge.models import Classifier
from dlforge.registry import MODELS, TASKS, Registry, did_you_mean


def test_unknown_name_lists_closest() -> None:
    with pytest.raises(DlforgeError, match=r"unknown model 'resnet_smal' \(did you mean 'resnet_small'\?\)"):
        MODELS.check("resnet_smal")
    with pytest.raises(DlforgeError, match=r"known: .*resnet_small.*timm:<name>"):
        MODELS.check("zzz")
    with pytest.raises(DlforgeError, match=r"unknown timm model 'resnet1888' \(did you mean 'resnet18'"):
        MODELS.check("timm:resnet1888")
    assert did_you_mean("adamx", ["adamw", "sgd"]) == " (did you mean 'adamw'?)"
    assert did_you_mean("qqqq", ["adamw", "sgd"]) == ""


def test_registering_a_name_twice_is_an_error() -> None:
    registry: Registry = Registry("thing")
    registry.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object)


def test_every_task_has_a_spec_class() -> None:
    for name in TASKS.names():
        task = TASKS.get(name)
        assert task.spec_class.model_fields["task"].default == name


# Every registered model, plus one of each family: the same interface for all.
MODEL_NAMES = [*MODELS.names(), "timm:resnet10t", "torchvision:mobilenet_v3_small"]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_model_shares_the_classifier_interface(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = MODELS.get(name)(num_classes=5, in_channels=in_channels).eval()
    assert isinstance(model, Classifier)
    x = torch.randn(2, in_channels, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.allclose(logits, model.head(features), atol=1e-5)
    # The head is the only part that knows the labels: swapping it keeps the backbone's output.
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"backbone", "head"}
