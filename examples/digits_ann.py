"""DPAP on the paper's MNIST ANN (20C5-MP2-50C5-MP2-500FC-10FC, ReLU) trained on scikit-learn's digits.

The same pruner as for spiking nets: the activation trace of each ReLU replaces the
spike trace. Prints dense vs DPAP accuracy, prunable parameters and FLOPs kept.

    python examples/digits_ann.py --epochs 40
"""

from __future__ import annotations

from _digits_common import parse_args, run

from nni_dpap.models import LeNetANN


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], {"epochs": 40, "lr": 1e-3})
    run(args, lambda: LeNetANN(in_channels=1, input_size=8, num_classes=10), "ANN 20C5-MP2-50C5-MP2-500FC-10FC")
