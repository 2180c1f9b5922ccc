"""The direct-encoded input stage in one kernel: the modules' numbers, the modules wherever it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_dpap.models import SpikingConvNet
from nni_dpap.snn import AvgPool2d, DirectEncoder, LIFNeuron, PLIFNeuron, SigmoidSurrogate, fused
from nni_dpap.snn.direct import encode_fire_pool, fusable

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C++ compiler for the kernel library")


def _stage(T: int, plif: bool, sigmoid: bool, detach: bool, dtype: torch.dtype, channels: int, masked: bool):
    kwargs = {"v_threshold": 0.5, "detach_reset": detach}
    if sigmoid:
        kwargs["surrogate"] = SigmoidSurrogate(alpha=3.0)
    neuron = (PLIFNeuron(T, init_tau=3.0, **kwargs) if plif else LIFNeuron(T, tau=2.0, **kwargs)).to(dtype)
    if masked:
        neuron.set_time_mask((torch.rand(channels, T, generator=torch.Generator().manual_seed(3)) > 0.3).float())
    return DirectEncoder(T), neuron


def _reference(x, encoder, neuron, pool):
    ref = copy.deepcopy(neuron)
    ref.backend = "torch"  # the Python loop over time steps, module by module
    out = ref(encoder(x))
    return (out if pool is None else pool(out)), ref


@pytest.mark.parametrize("shape", [(3, 5, 9, 7), (2, 4, 8, 8), (64, 15, 28, 28)])
@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("plif,sigmoid,detach,masked,dtype", [
    (False, False, False, False, torch.float32), (True, False, False, False, torch.float32),
    (False, True, True, True, torch.float64), (True, True, False, True, torch.float64),
    (True, False, True, False, torch.float64),
])
def test_same_spikes_and_gradients_as_the_modules(shape, pooled, plif, sigmoid, detach, masked, dtype):
    T = 4
    gen = torch.Generator().manual_seed(0)
    encoder, neuron = _stage(T, plif, sigmoid, detach, dtype, shape[1], masked)
    pool = AvgPool2d(2) if pooled else None
    x = (2 * torch.rand(shape, generator=gen, dtype=dtype)).requires_grad_()
    assert fusable(x, encoder, neuron, pool)
    y = encode_fire_pool(x, encoder, neuron, pool)
    assert type(y.grad_fn).__name__ == "_DirectFireBackward"
    x_ref = x.detach().clone().requires_grad_()
    y_ref, ref = _reference(x_ref, encoder, neuron, pool)
    assert y.shape == y_ref.shape and 0.02 < y_ref.mean() < 0.98  # some spikes, not all
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    grad = torch.randn(y.shape, generator=gen, dtype=dtype)
    wanted = [x] + ([neuron.w] if plif else [])
    got = torch.autograd.grad(y, wanted, grad)
    expected = torch.autograd.grad(y_ref, [x_ref] + ([ref.w] if plif else []), grad)
    assert expected[0].abs().max() > 0.1
    for a, b in zip(got, expected):  # summed over the steps in another order than autograd's
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference runs the kernel without autograd: the same output
        torch.testing.assert_close(encode_fire_pool(x, encoder, neuron, pool), y_ref, rtol=0, atol=1e-12)


def test_odd_sizes_give_no_gradient_to_the_rows_pooling_drops():
    encoder, neuron = _stage(3, False, False, False, torch.float64, 2, False)
    x = (2 * torch.rand(2, 2, 5, 7, dtype=torch.float64)).requires_grad_()
    y = encode_fire_pool(x, encoder, neuron, AvgPool2d(2))
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert y.shape == (6, 2, 2, 3)
    assert gx[:, :, 4, :].abs().sum() == 0 and gx[:, :, :, 6].abs().sum() == 0
    assert gx[:, :, :4, :6].abs().sum() > 0


def test_multithreaded_call_equals_one_thread():
    encoder, neuron = _stage(8, True, False, False, torch.float32, 15, True)
    x = (2 * torch.rand(32, 15, 28, 28, generator=torch.Generator().manual_seed(1))).requires_grad_()
    threads = torch.get_num_threads()
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            y = encode_fire_pool(x, encoder, neuron, AvgPool2d(2))
            results.append((y, *torch.autograd.grad(y, [x, neuron.w], torch.ones_like(y))))
        finally:
            torch.set_num_threads(threads)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # work items are independent; dL/dw in a fixed order


def test_hooks_see_the_modules():
    encoder, neuron = _stage(4, False, False, False, torch.float32, 3, False)
    pool = AvgPool2d(2)
    x = 2 * torch.rand(2, 3, 6, 6)
    seen = []
    handle = neuron.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert not fusable(x, encoder, neuron, pool)
    y = encode_fire_pool(x, encoder, neuron, pool)
    handle.remove()
    assert seen == [torch.Size([8, 3, 6, 6])] and y.grad_fn is None
    torch.testing.assert_close(y, _reference(x, encoder, neuron, pool)[0], rtol=0, atol=0)
    assert fusable(x, encoder, neuron, pool)


@pytest.mark.parametrize("case", ["other_T", "store_v", "loop_backend", "single_step", "max_pool", "pool_3x3",
                                  "identity_encoder", "channels_mismatch_mask", "bfloat16"])
def test_the_modules_run_where_the_kernel_does_not_apply(case):
    encoder, neuron = _stage(4, False, False, False, torch.float32, 3, False)
    pool: nn.Module = AvgPool2d(2)
    x = 2 * torch.rand(2, 3, 6, 6)
    if case == "other_T":
        encoder = DirectEncoder(2)
    elif case == "store_v":
        neuron.store_v = True
    elif case == "loop_backend":
        neuron.backend = "torch"
    elif case == "single_step":
        neuron.step_mode = "s"
    elif case == "max_pool":
        pool = nn.MaxPool2d(2)
    elif case == "pool_3x3":
        pool = AvgPool2d(3, 2)
    elif case == "identity_encoder":
        encoder = nn.Identity()  # type: ignore[assignment]
        x = torch.cat([x] * 4)
    elif case == "channels_mismatch_mask":
        neuron.set_time_mask(torch.ones(5, 4))
    elif case == "bfloat16":
        x = x.to(torch.bfloat16)
    assert not fusable(x, encoder, neuron, pool)
    if case == "channels_mismatch_mask":
        with pytest.raises(Exception, match="time mask"):
            encode_fire_pool(x, encoder, neuron, pool)
        return
    if case == "single_step":
        return  # (a single-step neuron is not fed [T*B, ...] by a model; nothing to compare)
    y = encode_fire_pool(x, encoder, neuron, pool)
    torch.testing.assert_close(y, pool(neuron(encoder(x))), rtol=0, atol=0)


def test_without_the_library_the_modules_run(monkeypatch):
    encoder, neuron = _stage(4, False, False, False, torch.float32, 3, False)
    x = 2 * torch.rand(2, 3, 6, 6)
    expected = AvgPool2d(2)(neuron(encoder(x)))
    monkeypatch.setattr(fused, "library", lambda: None)
    torch.testing.assert_close(encode_fire_pool(x, encoder, neuron, AvgPool2d(2)), expected, rtol=0, atol=0)


def test_spiking_conv_net_trains_the_same_with_and_without_the_kernel():
    torch.manual_seed(0)
    model = SpikingConvNet(1, 28, 10, T=4)
    ref = copy.deepcopy(model)
    hook = ref.sn1.register_forward_pre_hook(lambda module, args: None)  # any hook: the modules run
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for net in (model, ref):
        F.cross_entropy(net(x), y).backward()
    hook.remove()
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-6)
    assert model.conv1.weight.grad.abs().sum() > 0  # the gradient flows back through the kernel
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("prune_first_conv", [False, True])
def test_dpap_training_runs_the_kernel_unless_it_observes_sn1(prune_first_conv, make_evaluator, digits, monkeypatch):
    """DPAP hooks the neuron after each pruned layer: with conv1 left alone (the default) sn1 is not observed
    and the kernel runs; with conv1 pruned, sn1's spikes feed its statistics and the modules run."""
    from nni_dpap import DPAPPruner
    from nni_dpap.snn import direct

    calls: list[int] = []
    original = direct._forward
    monkeypatch.setattr(direct, "_forward", lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    model = SpikingConvNet(1, 8, 10, T=4)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], make_evaluator(model), epochs=1,
                        steps_per_epoch=len(digits[0]), hparams={"prune_first_conv": prune_first_conv})
    pruner.compress()
    assert (len(calls) >= len(digits[0])) == (not prune_first_conv)
