"""Federated-learning poisoning lab: simulated clients, data and model
poisoning attacks, and robust aggregation in the clear or in MPC.

    from pgkernels.fl import FLConfig, run, sweep
    res = run(FLConfig(dataset="digits", attack="alie", defense="krum", rounds=10))
    print(res["final"])

Command line: ``python -m pgkernels.fl.cli fl --dataset digits --attack alie --defense krum``
and ``python -m pgkernels.fl.cli fl-sweep --attacks alie,ipm --defenses fedavg,krum``.
See :mod:`pgkernels.fl.simulation` for the round structure, :mod:`.attacks`
for the attacks and their sources, :mod:`.metrics` for the metrics.
"""

from . import attacks, metrics, models
from .attacks import (ATTACKS, DATA_ATTACKS, UPDATE_ATTACKS, alie, apply_trigger, backdoor, gaussian, ipm,
                      label_flip, make_trigger, min_max, min_sum, scale, sign_flip, targeted_mislabel)
from .metrics import accuracy, accuracy_drop, attack_success_rate, detection_rates
from .models import cnn, get_flat, logreg, make_model, mlp, set_flat
from .simulation import (DEFENSES, FLConfig, PlaintextAggregator, defense_kwargs, markdown, plot, run, sweep,
                         write_table)

__all__ = [
    "ATTACKS", "DATA_ATTACKS", "DEFENSES", "FLConfig", "PlaintextAggregator", "UPDATE_ATTACKS", "accuracy",
    "accuracy_drop", "alie", "apply_trigger", "attack_success_rate", "attacks", "backdoor", "cnn", "defense_kwargs",
    "detection_rates", "gaussian", "get_flat", "ipm", "label_flip", "logreg", "make_model", "make_trigger",
    "markdown", "metrics", "min_max", "min_sum", "mlp", "models", "plot", "run", "scale", "set_flat", "sign_flip",
    "sweep", "targeted_mislabel", "write_table",
]
