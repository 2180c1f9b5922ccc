"""Kept indices and slicing tensors to them."""

from __future__ import annotations

import torch

from nni_dpap.slicing import KeptIndices, cut, slice_to


def test_slice_to_rows_and_columns():
    t = torch.arange(12.0).view(3, 4)
    assert slice_to(t, KeptIndices(torch.tensor([2]), torch.tensor([0, 3])), (1, 2)).tolist() == [[8.0, 11.0]]
    assert slice_to(t, KeptIndices(torch.tensor([0, 2]), None), (2, 4)).tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert slice_to(t, KeptIndices(None, None), (1, 4)) is None  # the indices do not explain the new shape
    assert slice_to(t, None, (3, 4)) is t


def test_cut_copies():
    t = torch.arange(6.0).view(2, 3)
    out = cut(t, torch.tensor([1]), torch.tensor([0, 2]))
    assert out.tolist() == [[3.0, 5.0]]
    out[0, 0] = -1
    assert t[1, 0] == 3.0
    assert cut(t, None).tolist() == t.tolist()
