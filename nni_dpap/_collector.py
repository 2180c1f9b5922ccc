"""The forward hooks that feed DPAP's statistics during training (NNI glue).

A :class:`SignalCollector` makes the hooks the pruner registers through the evaluator: at
the start of every forward pass it commits the last batch and resets the neurons; a
forward-pre-hook on each prunable layer hands its input (presynaptic signal) to the
layer's statistics; a forward hook on each neuron / activation module hands its output
(postsynaptic signal), telling the calls of a shared module apart by their index in the
forward pass and replaying functional activations.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping

from nni.compression.utils.evaluator import ForwardHook
from torch import Tensor, nn

from ._layers import LayerState
from ._nni import ForwardPreHook
from .adapters import NeuronAdapter

__all__ = ["SignalCollector"]

_Reader = tuple[LayerState, "int | None", tuple[Callable[[Tensor], Tensor], ...]]  # layer, call index, replay tail


class SignalCollector:
    """Hooks feeding the statistics of ``layers`` from a forward pass of the model whose modules are ``modules``."""

    def __init__(self, layers: Mapping[str, LayerState], modules: Mapping[str, nn.Module],
                 neurons: Iterable[tuple[nn.Module, NeuronAdapter]]) -> None:
        self.layers, self.modules, self.neurons = layers, modules, list(neurons)
        self._call_counts: dict[int, int] = defaultdict(int)
        #: Whether the layer hooks record signals (off once the structure is final; neurons are still reset)
        self.collecting = True

    def commit(self) -> None:
        """Fold the pending calls of the last batch into the statistics."""
        for layer in self.layers.values():
            if layer.stats.pending:
                layer.stats.commit()

    def hooks(self, root: nn.Module) -> list[Any]:
        """NNI hook objects for :meth:`nni.compression.utils.evaluator.Evaluator.register_hooks`."""
        hooks: list[Any] = [ForwardPreHook(root, "", lambda buffer: self._start_of_forward)]
        readers: dict[str, list[_Reader]] = defaultdict(list)
        for name, layer in self.layers.items():
            hooks.append(ForwardPreHook(layer.module, name, lambda buffer, layer=layer: self._pre_hook(layer)))
            for readout in layer.link.readouts:
                readers[readout.module].append((layer, readout.call_index, readout.tail))
        for module_name, entries in readers.items():
            hooks.append(ForwardHook(self.modules[module_name], module_name,
                                     lambda buffer, entries=entries: self._post_hook(entries)))
        return hooks

    def _start_of_forward(self, module: nn.Module, args: Any) -> None:
        self.commit()
        self._call_counts.clear()
        for neuron, adapter in self.neurons:  # state is reset between batches without user action
            adapter.reset(neuron)

    def _pre_hook(self, layer: LayerState) -> Callable[..., None]:
        def collect_pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            if self.collecting and module.training and args and isinstance(args[0], Tensor):
                layer.stats.add_pre(layer.pre_rows(args[0]))
        return collect_pre

    def _post_hook(self, entries: list[_Reader]) -> Callable[..., None]:
        def collect_post(module: nn.Module, args: Any, output: Any) -> None:
            if not self.collecting:
                return
            index = self._call_counts[id(module)]
            self._call_counts[id(module)] = index + 1
            if not module.training:
                return
            for layer, call_index, tail in entries:
                if call_index is not None and call_index != index:
                    continue
                signal = output
                if tail:
                    signal = signal.detach().clone()
                    for op in tail:
                        signal = op(signal)
                layer.stats.add_post(layer.post_steps(self.modules, signal))
        return collect_post
