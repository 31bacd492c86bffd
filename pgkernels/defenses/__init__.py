"""Robust aggregation inside MPC (see :mod:`pgkernels.defenses.robust` and
:mod:`pgkernels.defenses.clustering`); plaintext references in
:mod:`pgkernels.defenses.reference`; every rule's facts (parameters, fewest
clients, what it selects) in :mod:`pgkernels.defenses.registry`, which every
application reads. SafeNet's rule and reference are in
:mod:`pgkernels.defenses.safenet`; the MPC job that runs it is
:func:`pgkernels.train.safenet_mpc.safenet_mpc`. Poisoned-record detectors
(spectral signatures, activation clustering, STRIP) on shared
representations: :mod:`pgkernels.defenses.detection`."""

from . import detection, registry
from .clustering import auror, flame, flame_admitted
from .robust import bulyan, fedavg, fltrust, krum, krum_scores, median, multi_krum, norm_clip, trimmed_mean
from .safenet import safenet_reference

__all__ = ["auror", "bulyan", "detection", "fedavg", "flame", "flame_admitted", "fltrust", "krum", "krum_scores",
           "median", "multi_krum", "norm_clip", "registry", "safenet_reference", "trimmed_mean"]
