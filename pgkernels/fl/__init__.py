"""Federated-learning poisoning lab (an application): simulated clients, data and
model poisoning, and robust aggregation in the clear or in MPC.

    from pgkernels.fl import FLConfig, run, sweep
    res = run(FLConfig(dataset="digits", attack="alie", defense="krum", rounds=10))
    print(res["final"])

Command line: ``pgkernels fl --dataset digits --attack alie --defense krum``
and ``pgkernels fl-sweep --attacks alie,ipm --defenses fedavg,krum``.

Modules: :mod:`.config` (:class:`FLConfig`, the rule arguments it implies),
:mod:`.lab` (:class:`Lab`: data split, poisoning, local training,
evaluation), :mod:`.experiment` (:func:`run`, :func:`sweep`), :mod:`.report`
(tables and plots), :mod:`.plaintext` and :mod:`.mpc` (the two aggregation
backends), :mod:`.cli`. The lab uses the library below it: rules from
:mod:`pgkernels.defenses.registry`, :mod:`pgkernels.models`,
:mod:`pgkernels.attacks`, :mod:`pgkernels.metrics`, :mod:`pgkernels.data`.
"""

from .config import ATTACKS, DATA_ATTACKS, UPDATE_ATTACKS, FLConfig, defense_kwargs
from .experiment import run, sweep
from .lab import Lab, load_dataset
from .plaintext import PlaintextAggregator
from .report import markdown, plot, write_table

__all__ = ["ATTACKS", "DATA_ATTACKS", "FLConfig", "Lab", "PlaintextAggregator", "UPDATE_ATTACKS", "defense_kwargs",
           "load_dataset", "markdown", "plot", "run", "sweep", "write_table"]
