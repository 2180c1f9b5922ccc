"""The model's graph as DPAP needs it, read from a ``torch.fx`` trace.

* :mod:`.tracer`: a tracer that keeps spiking neurons and library step layers whole.
* :mod:`.nodes`: what a node is (layer, neuron/activation, channel-preserving op...).
* :mod:`.links`: which neuron follows which prunable layer (:func:`link_layers`).
* :mod:`.replay`: functional activations replayed in a hook.
* :mod:`.flow`: which layer feeds which, which layers see spikes (for counting costs).
"""

from __future__ import annotations

from .flow import spike_driven_layers, upstream_layers
from .links import GraphInfo, LayerLink, Readout, link_layers
from .nodes import PRUNABLE_TYPES
from .tracer import trace_model

__all__ = ["Readout", "LayerLink", "GraphInfo", "trace_model", "link_layers", "upstream_layers",
           "spike_driven_layers", "PRUNABLE_TYPES"]
