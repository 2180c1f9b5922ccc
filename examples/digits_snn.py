"""DPAP on the paper's MNIST SNN (15C3-AP2-40C3-AP2-300FC-10FC) trained on scikit-learn's digits.

Trains the dense SNN and the DPAP-pruned SNN for the same number of epochs from the
same initial weights and prints accuracy, prunable parameters kept, FLOPs kept and
the channels / neurons kept per layer, as mean and spread over three seeds. Runs
offline on 2 CPU cores in about 90 seconds.

    python examples/digits_snn.py --epochs 60 --T 4
"""

from __future__ import annotations

from _digits_common import parse_args, run

from nni_dpap.models import SpikingConvNet


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], {
        "epochs": 60, "lr": 3e-3,
        "extra": {"T": (int, 4, "number of time steps")},
    })
    run(args, lambda: SpikingConvNet(in_channels=1, input_size=8, num_classes=10, T=args.T),
        "SNN 15C3-AP2-40C3-AP2-300FC-10FC")
