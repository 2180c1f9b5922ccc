"""The Triton (GPU) kernels of the fused LIF/PLIF neuron against the reference Python loop.

No GPU here: the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, read by
``triton.jit`` when the kernel module is imported), on CPU tensors, through the neurons' own
dispatch (the C++ kernel switched off so that ``backend='fused'`` takes the Triton path). The
interpreter executes the kernels' source with NumPy: the logic is checked, the GPU code
generation is not (``benchmarks/bench_neurons.py --device cuda`` times it where there is a GPU).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import sys

import pytest
import torch
from test_snn_fused import SHAPES, T, _assert_same, _pair

from nni_dpap.snn import LIFNeuron, PLIFNeuron, fused, fused_triton

pytest.importorskip("triton")
_KERNELS = "nni_dpap.snn._triton_lif"


@pytest.fixture
def interpreted(monkeypatch):
    """Triton's interpreter for a fresh import of the kernels; CPU tensors routed to them."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(fused_triton, "_STATE", fused_triton._State())
    monkeypatch.setattr(fused, "plain_cpu_tensor", lambda x: False)  # the C++ kernel off
    _forget_kernels()
    yield importlib.import_module(_KERNELS)
    _forget_kernels()  # (a later import compiles for the GPU again)


def _forget_kernels() -> None:
    sys.modules.pop(_KERNELS, None)
    package = sys.modules["nni_dpap.snn"]
    if hasattr(package, "_triton_lif"):
        delattr(package, "_triton_lif")


@pytest.mark.parametrize("cls,surrogate,detach,masked,v_reset,layout", list(itertools.product(
    [LIFNeuron, PLIFNeuron], ["atan", "sigmoid"], [False, True], [False, True], [0.0, -0.3], list(SHAPES))))
def test_triton_matches_loop_float32(interpreted, cls, surrogate, detach, masked, v_reset, layout):
    gen = torch.Generator().manual_seed(0)
    shape = SHAPES[layout]
    ref, fast = _pair(cls, surrogate, detach, masked, v_reset, shape[1])
    x = torch.randn(shape, generator=gen) * 1.5 + 0.5
    grad_out = torch.randn(shape, generator=gen)
    _assert_same(ref, fast, x, grad_out, grad_atol=1e-6, w_rtol=1e-5)
    assert fused_triton._STATE.probed and fused_triton.unavailable_reason() is None  # the kernels ran


@pytest.mark.parametrize("cls,masked", list(itertools.product([LIFNeuron, PLIFNeuron], [False, True])))
def test_triton_matches_loop_float64(interpreted, cls, masked):
    gen = torch.Generator().manual_seed(2)
    shape = SHAPES["conv"]
    ref, fast = _pair(cls, "atan", False, masked, -0.3, shape[1])
    ref.double()
    fast.double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.5
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    _assert_same(ref, fast, x, grad_out, grad_atol=1e-12, w_rtol=1e-12)


def test_more_elements_than_one_program_and_no_grad(interpreted):
    # 3 programs of 1024 elements, the last one partly masked; inference returns no H unless asked
    x = torch.randn(T * 5, 620, generator=torch.Generator().manual_seed(3)) + 0.6
    ref, fast = _pair(PLIFNeuron, "atan", False, False, 0.0, 620)
    _assert_same(ref, fast, x, torch.ones_like(x), grad_atol=1e-6, w_rtol=1e-5)
    fast.store_v = False
    with torch.no_grad():
        spikes = fast(x)
    assert torch.equal(spikes.bool(), ref(x).detach().bool())


def test_supports():
    assert not fused_triton.supports(torch.zeros(2))  # a CPU tensor outside the interpreter: the C++ kernel's
    assert not fused_triton.supports(torch.zeros(2, device="meta"))


def test_supports_in_the_interpreter(interpreted):
    assert fused_triton.supports(torch.zeros(2)) and fused_triton.supports(torch.zeros(2, dtype=torch.bfloat16))
    assert not fused_triton.supports(torch.zeros(2, dtype=torch.int64))


def test_launch_failure_falls_back_to_the_loop_and_logs_once(interpreted, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("PTX .version 9.9 does not support .target sm_20")

    monkeypatch.setattr(interpreted, "lif_forward", type("Launcher", (), {"__getitem__": lambda self, grid: broken})())
    x = torch.randn(SHAPES["conv"], generator=torch.Generator().manual_seed(4)) + 0.5
    ref, fast = _pair(LIFNeuron, "atan", False, True, 0.0, SHAPES["conv"][1])
    with caplog.at_level(logging.WARNING, logger="nni_dpap"):
        _assert_same(ref, fast, x, torch.ones_like(x), grad_atol=1e-6, w_rtol=1e-5)
        _assert_same(ref, fast, x, torch.ones_like(x), grad_atol=1e-6, w_rtol=1e-5)
    warnings = [r for r in caplog.records if "Triton kernel unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "sm_20" in warnings[0].getMessage()
    assert "sm_20" in fused_triton.unavailable_reason()


def test_missing_triton_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(fused_triton, "_STATE", fused_triton._State())
    monkeypatch.setitem(sys.modules, _KERNELS, None)  # import fails as if Triton were not installed
    with caplog.at_level(logging.WARNING, logger="nni_dpap"):
        assert not fused_triton.available()
        assert fused_triton.lif_multi_step(torch.zeros(4, 2), fused.FusedConfig(2, 1.0, 0.0, False, "atan", 2.0, 2.0)) is None
    assert len(caplog.records) == 1 and "ModuleNotFoundError" in fused_triton.unavailable_reason()


@pytest.mark.parametrize("neuron", ["lif", "plif"])
def test_whole_spiking_net_matches_the_loop(interpreted, neuron):
    # the paper's MNIST SNN at 12x12, T = 2: every neuron of it through the Triton kernels
    from nni_dpap.models import SpikingConvNet
    from nni_dpap.snn.neurons import set_backend

    torch.manual_seed(0)
    ref = SpikingConvNet(1, 12, 10, T=2, neuron=neuron)
    fast = SpikingConvNet(1, 12, 10, T=2, neuron=neuron)
    fast.load_state_dict(ref.state_dict())
    set_backend(ref, "torch")
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1)) * 3
    y = torch.arange(6) % 10
    for model in (ref, fast):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    assert fused_triton._STATE.probed
    grads = {n: p.grad for n, p in ref.named_parameters()}
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-5, atol=1e-6)


def _signature(kernel, dtype: str) -> dict[str, str]:
    """Triton signature of ``kernel`` for tensors of ``dtype``: pointers, i32/i64 sizes, fp64 settings."""
    ints = {"T": "i32", "N": "i64", "L": "i32"}
    return {name: ("constexpr" if name.isupper() and name not in ints else ints.get(name) or
                   (f"*{dtype}" if name.endswith("_ptr") else "fp64"))
            for name in kernel.arg_names}


@pytest.mark.parametrize("kernel,dtype", [("lif_forward", "fp32"), ("lif_backward", "fp32"),
                                          ("lif_backward", "fp64"), ("lif_backward", "fp16"),
                                          ("lif_backward", "bf16")])
def test_every_kernel_variant_compiles_for_a_gpu(kernel, dtype):
    # the interpreter does not check what only GPU code generation checks (constexpr globals, types of the
    # scalars, ...): compile each variant to a cubin for an A100 (sm_80) with Triton's own ptxas, no GPU needed
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(_KERNELS), kernel)
    flags = [name for name in fn.arg_names if name.isupper() and name not in ("T", "N", "L", "F64", "BLOCK",
                                                                              "GRAD_K")]
    variants = itertools.product([False, True], repeat=len(flags)) if dtype == "fp32" else [(True,) * len(flags)]
    for values in variants:
        constexprs = {**dict(zip(flags, values)), "F64": dtype == "fp64", "BLOCK": 1024}
        if "GRAD_K" in fn.arg_names:
            constexprs["GRAD_K"] = constexprs.get("MUL", True)
        compiled = triton.compile(ASTSource(fn=fn, signature=_signature(fn, dtype), constexprs=constexprs),
                                  target=GPUTarget("cuda", 80, 32))
        assert compiled.asm["cubin"] and ".entry " + kernel in compiled.asm["ptx"]


def test_first_use_in_inference_mode(interpreted):
    # the first call of a process often comes from an evaluation: the kernels' check must still pass
    x = torch.randn(SHAPES["linear"], generator=torch.Generator().manual_seed(6)) + 0.5
    ref, fast = _pair(LIFNeuron, "atan", False, False, 0.0, SHAPES["linear"][1])
    with torch.inference_mode():
        spikes = fast(x)
    assert fused_triton.unavailable_reason() is None and fused_triton._STATE.probed
    assert torch.equal(spikes.bool(), ref(x).detach().bool())
