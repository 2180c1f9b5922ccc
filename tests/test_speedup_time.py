"""Mask propagation without the time dim: which tensors carry time, and the graph with it removed."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import fx, nn

from nni_dpap.errors import SpeedupError
from nni_dpap.speedup._time import layout_of, record_layouts, remove_time, resize_batch


class TimeMajor(nn.Module):
    """[N, C, H, W] -> [T, N, ...] -> ops on time-major tensors -> mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        seq = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)  # [T, N, C, H, W]
        flat = seq.flatten(2)  # [T, N, C*H*W]
        folded = flat.flatten(0, 1)  # [T*N, C*H*W]
        out = self.fc(folded).view(4, x.shape[0], 5)  # back to [T, N, 5]
        return (out * 2).mean(0)


def _traced(model: nn.Module) -> fx.GraphModule:
    return fx.symbolic_trace(model)


def test_layouts_are_read_from_two_batch_sizes():
    module = _traced(TimeMajor())
    layouts, shapes = record_layouts(module, (torch.rand(2, 3, 4, 4),), lambda: None)
    kinds = {n.name: (layout_of(layouts, n).kind, layout_of(layouts, n).steps) for n in module.graph.nodes}
    assert kinds["x"] == ("batch", 1) and kinds["unsqueeze"] == ("timed", 1) and kinds["repeat"] == ("timed", 4)
    assert kinds["flatten_1"] == ("folded", 4) and kinds["fc"] == ("folded", 4) and kinds["view"] == ("timed", 4)
    assert kinds["mean"] == ("batch", 1)
    assert shapes[next(n for n in module.graph.nodes if n.name == "repeat")].dims == (4, 5, 3, 4, 4)


def test_remove_time_gives_a_batch_first_graph_with_the_same_modules():
    model = TimeMajor()
    module = _traced(model)
    layouts, shapes = record_layouts(module, (torch.rand(2, 3, 4, 4),), lambda: None)
    graph = remove_time(module, layouts, shapes)
    assert graph is not None
    new = fx.GraphModule(model, graph)
    x = torch.rand(6, 3, 4, 4)
    expected = model.fc(x.flatten(1)) * 2  # one time step: the time ops are identities
    torch.testing.assert_close(new(x), expected, atol=1e-6, rtol=0)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["fc"]


def test_nothing_to_remove_and_unknown_ops():
    plain = _traced(nn.Sequential(nn.Flatten(), nn.Linear(8, 2)))
    layouts, shapes = record_layouts(plain, (torch.rand(2, 2, 4),), lambda: None)
    assert remove_time(plain, layouts, shapes) is None

    class Cumulative(nn.Module):
        def forward(self, x):
            return x.unsqueeze(0).repeat(3, 1, 1).roll(1, 0).sum(0)

    module = _traced(Cumulative())
    layouts, shapes = record_layouts(module, (torch.rand(2, 4),), lambda: None)
    with pytest.raises(SpeedupError, match="cannot propagate masks through .*roll"):
        remove_time(module, layouts, shapes)


def test_resize_batch():
    x, y = torch.arange(3.0).view(3, 1), torch.zeros(2)
    resized = resize_batch((x, y, 5), 5)
    assert resized[0].flatten().tolist() == [0, 1, 2, 0, 1] and resized[1] is y and resized[2] == 5
    assert resize_batch((torch.ones(2, 3),), 4, dim=1)[0].shape == (2, 4)
    assert operator.eq(resize_batch((), 5), ())
