"""The 2x2 average-pooling kernel: the same numbers as torch's, used only where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_dpap.models import LeNetANN, SpikingCifarNet, SpikingConvNet
from nni_dpap.snn import AvgPool2d, MaxPool2d, fused, pooling

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C++ compiler for the kernel library")


@pytest.fixture(autouse=True)
def _kernel_for_every_size(monkeypatch, request):
    """The small shapes below test the kernel's edge cases; by default such inputs run torch's pooling."""
    if not request.node.name.startswith("test_small_inputs_run_torchs_pooling"):
        monkeypatch.setattr(pooling, "MIN_ELEMENTS", 0)


@pytest.mark.parametrize("pool,functional", [(AvgPool2d(2), F.avg_pool2d), (MaxPool2d(2), F.max_pool2d)])
def test_small_inputs_run_torchs_pooling(pool, functional):
    small = torch.randn(2, 3, 8, 8, requires_grad=True)  # 384 elements
    large = torch.randn(2, 32, 16, 16, requires_grad=True)  # 16,384
    assert pooling.MIN_ELEMENTS == large.numel()
    assert type(pool(small).grad_fn).__name__ == type(functional(small, 2).grad_fn).__name__
    assert type(pool(large).grad_fn).__name__.startswith(("_AvgPool2x2", "_MaxPool2x2"))
    torch.testing.assert_close(pool(small), functional(small, 2), rtol=0, atol=0)


def _kernel_used(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and "AvgPool2x2" in type(y.grad_fn).__name__


def _max_kernel_used(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and "MaxPool2x2" in type(y.grad_fn).__name__


@pytest.mark.parametrize("shape", [(64, 15, 28, 28), (3, 5, 7, 9), (2, 4, 2, 3), (6, 10, 11)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_backward_equal_torch(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=dtype).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y, y_ref = AvgPool2d(2)(x), F.avg_pool2d(ref, 2)
    assert _kernel_used(y) and y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    grad = torch.randn(y.shape, generator=gen, dtype=dtype)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, ref.grad, rtol=0, atol=1e-6)  # odd rows/columns get exactly 0


def test_gradcheck_and_non_contiguous_gradient():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(AvgPool2d(2), (x,))
    y = AvgPool2d(2)(x)
    grad = torch.randn(y.shape[::-1], dtype=torch.float64).permute(3, 2, 1, 0)  # not contiguous
    (gx,) = torch.autograd.grad(y, x, grad)
    (gx_ref,) = torch.autograd.grad(F.avg_pool2d(x, 2), x, grad)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)


_OTHER_SETTINGS = [  # (pool, layout of the input): torch's pooling runs
    (lambda: AvgPool2d(3, 2), None), (lambda: AvgPool2d(2, 1), None), (lambda: AvgPool2d(2, padding=1), None),
    (lambda: AvgPool2d(2, ceil_mode=True), None), (lambda: AvgPool2d(2, divisor_override=3), None),
    (lambda: MaxPool2d(3, 2), None), (lambda: MaxPool2d(2, 1), None), (lambda: MaxPool2d(2, padding=1), None),
    (lambda: MaxPool2d(2, ceil_mode=True), None), (lambda: MaxPool2d(2, dilation=2), None),
] + [(pool, layout) for pool in (lambda: AvgPool2d(2), lambda: MaxPool2d(2)) for layout in (
    lambda x: x.contiguous(memory_format=torch.channels_last), lambda x: x.transpose(2, 3),
    lambda x: x.to(torch.bfloat16))]


@pytest.mark.parametrize("make,layout", _OTHER_SETTINGS)
def test_other_settings_and_layouts_run_torchs_pooling(make, layout):
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    inp = x if layout is None else layout(x)
    pool = make()
    y = pool(inp)
    assert not _kernel_used(y) and not _max_kernel_used(y)
    if isinstance(pool, nn.MaxPool2d):
        reference: nn.Module = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                            ceil_mode=pool.ceil_mode)
    else:
        reference = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                                 divisor_override=pool.divisor_override)
    torch.testing.assert_close(y, reference(inp), rtol=0, atol=0)


def test_without_the_library_torch_pools(monkeypatch):
    state = fused._State()
    state.failure = "RuntimeError: simulated"
    monkeypatch.setattr(fused, "_STATE", state)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = AvgPool2d(2)(x)
    assert not _kernel_used(y)
    torch.testing.assert_close(y, F.avg_pool2d(x, 2), rtol=0, atol=1e-6)


def test_too_small_input_gets_torchs_error_and_tracing_sees_avg_pool():
    with pytest.raises(RuntimeError, match="too small|Output size"):
        AvgPool2d(2)(torch.randn(1, 1, 1, 4))
    graph = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), AvgPool2d(2))).graph
    assert [n.target for n in graph.nodes if n.op == "call_function"] == [F.avg_pool2d]  # the fallback, traced


def test_spiking_conv_net_pools_with_the_kernel_and_matches_torch_pooling():
    torch.manual_seed(0)
    net = SpikingConvNet(1, 12, 10, T=2)
    reference = SpikingConvNet(1, 12, 10, T=2)
    reference.load_state_dict(net.state_dict())
    reference.pool1, reference.pool2 = nn.AvgPool2d(2), nn.AvgPool2d(2)
    assert isinstance(net.pool1, nn.AvgPool2d)  # NNI and the graph tracer see an ordinary pooling layer
    x = torch.rand(3, 1, 12, 12)
    torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-6)
    assert _kernel_used(net.pool1(torch.rand(2, 15, 12, 12, requires_grad=True)))


# -- max pooling ------------------------------------------------------------------------------------------
def _max_input(kind: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if kind == "spikes":  # 0/1: ties in most windows, ATen's first maximum must win
        return (torch.rand(shape, generator=gen) > 0.7).to(dtype)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if kind == "nan":  # NaN wins wherever it is (the last NaN of a window)
        x[..., 0, 1] = float("nan")
        x[..., 1, 1] = float("nan")
    elif kind == "-inf":
        x[..., :2, :2] = -float("inf")
    return x


@pytest.mark.parametrize("shape", [(64, 15, 28, 28), (3, 5, 7, 9), (6, 10, 11)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["spikes", "randn", "nan", "-inf"])
def test_max_pooling_equals_torch(shape, dtype, kind):
    gen = torch.Generator().manual_seed(0)
    x = _max_input(kind, shape, dtype, gen).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y, y_ref = MaxPool2d(2)(x), F.max_pool2d(ref, 2)
    assert _max_kernel_used(y) and y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0, equal_nan=True)
    grad = torch.randn(y.shape, generator=gen, dtype=dtype)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, ref.grad, rtol=0, atol=0)  # the same element of each window gets it


def test_max_pooling_with_indices_and_without_the_library_is_torchs(monkeypatch):
    x = torch.randn(2, 3, 6, 6)
    out, indices = MaxPool2d(2, return_indices=True)(x)
    torch.testing.assert_close(indices, F.max_pool2d(x, 2, return_indices=True)[1])
    state = fused._State()
    state.failure = "RuntimeError: simulated"
    monkeypatch.setattr(fused, "_STATE", state)
    y = MaxPool2d(2)(x.requires_grad_())
    assert not _max_kernel_used(y)
    torch.testing.assert_close(y, F.max_pool2d(x, 2), rtol=0, atol=0)


@pytest.mark.parametrize("build,shape", [(lambda: LeNetANN(1, 12, 10), (1, 12, 12)),
                                         (lambda: SpikingCifarNet(3, 8, 10, T=2, width=0.05), (3, 8, 8))])
def test_models_max_pool_with_the_kernel_and_match_torch_pooling(build, shape):
    torch.manual_seed(0)
    net = build()
    reference = build()
    reference.load_state_dict(net.state_dict())
    for name, module in list(reference.named_modules()):
        if isinstance(module, MaxPool2d):
            parent, _, attr = name.rpartition(".")
            setattr(reference.get_submodule(parent) if parent else reference, attr, nn.MaxPool2d(2))
    pools = [m for m in net.modules() if isinstance(m, MaxPool2d)]
    assert len(pools) == 2 and not any(isinstance(m, MaxPool2d) for m in reference.modules())
    x = torch.rand(3, *shape)
    torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-6)
    net(x).sum().backward()
    reference(x).sum().backward()
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
