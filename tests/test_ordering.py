"""Movement's order for DPAP's importance values: the values handed out by the score."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_close
from nni_dpap import ordering
from nni_dpap.ordering import in_order_of


def test_values_are_handed_out_in_the_order_of_the_score():
    values = torch.tensor([3.0, 1.0, 2.0, 9.0, -4.0])
    score = torch.tensor([0.0, 5.0, 1.0, -7.0, 2.0])
    alive = torch.tensor([True, True, True, False, True])
    out = in_order_of(values, score, alive)
    # alive by score: 1 (5.0), 4 (2.0), 2 (1.0), 0 (0.0) get 3, 2, 1, -4; entry 3 is not alive and keeps 9
    assert_close(out, torch.tensor([-4.0, 3.0, 1.0, 9.0, 2.0]))
    assert_close(out[alive].sort().values, values[alive].sort().values)  # the same values, handed out again
    assert_close(values, torch.tensor([3.0, 1.0, 2.0, 9.0, -4.0]))  # the input is not changed


def test_a_matrix_keeps_its_shape_and_ties_keep_dpaps_own_order():
    values = torch.tensor([[0.1, 0.7], [0.4, 0.2]])
    out = in_order_of(values, torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    assert out.shape == (2, 2)
    assert_close(out, values)  # no score yet (all zeros): DPAP's own values stay where they are
    tied = in_order_of(values, torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.ones(2, 2, dtype=torch.bool))
    # entry (1, 0) scores highest and gets 0.7; the three tied entries keep their own order for the rest
    assert_close(tied, torch.tensor([[0.1, 0.4], [0.7, 0.2]]))
    single = in_order_of(values, torch.rand(2, 2), torch.tensor([[False, True], [False, False]]))
    assert_close(single, values)  # one alive entry: nothing to hand out


def _reference(values: torch.Tensor, score: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The rule spelled out: alive entries by score (ties: higher own value, then lower index) get the values
    from the highest down."""
    flat_v, flat_s, flat_a = values.flatten().tolist(), score.flatten().tolist(), alive.flatten().tolist()
    taking = sorted((i for i, a in enumerate(flat_a) if a), key=lambda i: (-flat_s[i], -flat_v[i], i))
    out = list(flat_v)
    for i, v in zip(taking, sorted((flat_v[i] for i in taking), reverse=True)):
        out[i] = v
    return torch.tensor(out).view_as(values)


@pytest.mark.parametrize("numpy_sorts", [True, False])  # False: PyTorch's sorts, as on a GPU
@pytest.mark.parametrize("tied_scores", [False, True])
def test_every_path_hands_out_the_values_as_the_rule_says(tied_scores: bool, numpy_sorts: bool, monkeypatch):
    monkeypatch.setattr(ordering, "_numpy_sorts", lambda tensor: numpy_sorts)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        values = torch.randint(0, 6, (30, 40), generator=generator).float() / 5  # many equal values
        score = torch.randn(30, 40, generator=generator)
        if tied_scores:  # the stable path: some scores tied
            score = (score * 2).round()
        alive = torch.rand(30, 40, generator=generator) < 0.7
        assert_close(in_order_of(values, score, alive), _reference(values, score, alive))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="one shape"):
        in_order_of(torch.zeros(3), torch.zeros(4), torch.ones(3, dtype=torch.bool))
