"""Robust aggregation inside MPC (see :mod:`pgkernels.defenses.robust` and
:mod:`pgkernels.defenses.clustering`); plaintext references in
:mod:`pgkernels.defenses.reference`; every rule's facts (parameters, fewest
clients, what it selects) in :mod:`pgkernels.defenses.registry`, which every
application reads."""

from . import registry
from .clustering import auror, flame, flame_admitted
from .robust import bulyan, fedavg, fltrust, krum, krum_scores, median, multi_krum, norm_clip, trimmed_mean
from .safenet import safenet_mpc, safenet_reference

__all__ = ["auror", "bulyan", "fedavg", "flame", "flame_admitted", "fltrust", "krum", "krum_scores", "median",
           "multi_krum", "norm_clip", "registry", "safenet_mpc", "safenet_reference", "trimmed_mean"]
