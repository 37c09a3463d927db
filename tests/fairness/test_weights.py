"""Reweighing's parts: Kamiran-Calders weights, the Trainer's weighted sampler (exact resume, DDP shards), and the
errors of a spec that reweighs by a column the data lacks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from dlforge.errors import DlforgeError
from dlforge.training.reweigh import kamiran_calders, reweigh
from dlforge.training.trainer import WeightedSampler


def test_kamiran_calders_weights_make_group_and_label_independent() -> None:
    rng = np.random.default_rng(0)
    groups = pd.DataFrame({"sex": rng.choice(["F", "M"], 2000, p=[0.3, 0.7]), "race": rng.choice(["a", "b"], 2000)})
    y = (rng.random(2000) < np.where(groups["sex"] == "M", 0.4, 0.1)).astype(int)
    for columns in (["sex"], ["sex", "race"]):
        weights, cells = kamiran_calders(groups[columns], y)
        key = groups[columns].astype(str).agg("/".join, axis=1)
        weighted = pd.DataFrame({"g": key, "y": y, "w": weights / weights.sum()})
        p_group, p_label = weighted.groupby("g")["w"].sum(), weighted.groupby("y")["w"].sum()
        for (g, label), p in weighted.groupby(["g", "y"])["w"].sum().items():
            assert p == pytest.approx(p_group[g] * p_label[label])
        # the marginals are kept: each group weighs its share of the rows, each label its share
        assert p_group.to_numpy() == pytest.approx(key.value_counts(normalize=True).sort_index().to_numpy())
        assert p_label.to_numpy() == pytest.approx(np.bincount(y) / len(y))
        assert len(cells) == 2 ** len(columns) * 2 and cells["count"].sum() == 2000


def test_the_weighted_sampler_draws_by_weight_per_epoch_and_shards_for_ddp() -> None:
    weights = np.array([1.0, 1.0, 2.0, 0.0] * 250)
    sampler = WeightedSampler(weights, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 1000 and list(sampler) == first  # (seed, epoch) alone fix the draw
    counts = np.bincount(np.array(first) % 4, minlength=4)
    assert counts[3] == 0 and counts[2] == pytest.approx(500, abs=60)  # in proportion to the weights
    sampler.set_epoch(1)
    assert list(sampler) != first
    # DDP: every rank draws the same 1002 indices (a multiple of the world) and takes every third from its rank
    ranks = [list(WeightedSampler(weights, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert {len(r) for r in ranks} == {334}
    drawn = torch.multinomial(torch.as_tensor(weights), 1002, replacement=True, generator=torch.Generator()
                              .manual_seed(3))
    assert [i for step in zip(*ranks, strict=True) for i in step] == drawn.tolist()
    with pytest.raises(DlforgeError, match="finite, non-negative and not all zero"):
        WeightedSampler([0.0, 0.0], seed=0)


def test_reweighing_by_a_missing_column_or_without_columns_is_an_error() -> None:
    frame = pd.DataFrame({"sex": ["F", "M", "M"], "age": [30, 40, 50]})
    prepared = SimpleNamespace(train_columns=(frame, np.array([0, 1, 1])), train=[0, 1, 2])
    with pytest.raises(DlforgeError, match=r"train.fairness.reweigh: no column 'sexx' \(did you mean 'sex'\?\); the "
                                           r"data's columns: sex, age"):
        reweigh(prepared, ["sexx"], ["no", "yes"])
    with pytest.raises(DlforgeError, match="training data carries no columns besides the model's input"):
        reweigh(SimpleNamespace(train_columns=None), ["sex"], ["no", "yes"])
    weights, summary = reweigh(prepared, ["sex"], ["no", "yes"])
    assert len(weights) == 3 and summary["reweigh"]["cells"][0] == {"group": {"sex": "F"}, "label": "no", "count": 1,
                                                                    "weight": pytest.approx(1 / 3 * 1 / 3 / (1 / 3))}
