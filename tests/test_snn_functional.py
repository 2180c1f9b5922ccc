from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_dpap.errors import ConfigError, ShapeError
from nni_dpap import auto_reset, reset_net
from nni_dpap.snn import DirectEncoder, LIFNeuron, TimeAverage, fold_time, set_step_mode, set_time_steps, unfold_time


def test_direct_encoder_time_major_layout():
    x = torch.arange(6.0).view(2, 3)  # B = 2
    y = DirectEncoder(3)(x)
    assert y.shape == (6, 3)
    torch.testing.assert_close(unfold_time(y, 3), x.expand(3, 2, 3))
    torch.testing.assert_close(fold_time(unfold_time(y, 3)), y)
    torch.testing.assert_close(TimeAverage(3)(y), x)
    assert y.is_contiguous() and y.data_ptr() != x.data_ptr()  # a real copy: neurons may write in place
    graph = torch.fx.symbolic_trace(DirectEncoder(3)).graph  # a tracer records the repeat as a cat
    assert [n.target for n in graph.nodes if n.op == "call_function"] == [torch.cat]


def test_time_average_and_errors():
    seq = torch.tensor([[1.0], [3.0], [5.0], [7.0]])  # T = 2, B = 2
    assert TimeAverage(2)(seq).tolist() == [[3.0], [5.0]]
    with pytest.raises(ShapeError):
        unfold_time(torch.zeros(5, 1), 2)
    with pytest.raises(ConfigError):
        DirectEncoder(0)


class LoopNet(nn.Module):
    """Single-step neurons with an explicit Python loop over time."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.sn = LIFNeuron(step_mode="s")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.sn(self.fc(x)) for _ in range(3))


def test_auto_reset_resets_state_at_every_forward():
    torch.manual_seed(0)
    x = torch.rand(2, 3) * 4
    plain = LoopNet()
    first = plain(x)
    assert float((plain(x) - first).abs().max().detach()) > 0.5  # without a reset the membrane carries over
    with pytest.raises(ShapeError, match="reset the network"):
        plain(torch.rand(5, 3))

    net = LoopNet()
    net.load_state_dict(plain.state_dict())
    auto_reset(net)
    auto_reset(net)  # idempotent
    assert len(net._forward_pre_hooks) == 1
    torch.testing.assert_close(net(x), first)
    torch.testing.assert_close(net(x), first)
    net(torch.rand(5, 3))  # another batch size works: the state was reset


def test_reset_set_time_steps_and_step_mode():
    net = nn.Sequential(DirectEncoder(2), nn.Linear(3, 3), LIFNeuron(2), TimeAverage(2))
    set_time_steps(net, 5)
    assert net[0].T == net[2].T == net[3].T == 5
    assert net(torch.rand(4, 3)).shape == (4, 3)
    set_step_mode(net, "s")
    assert net[2].step_mode == "s"
    net[2](torch.rand(4, 3))
    reset_net(net)
    assert net[2].v is None
