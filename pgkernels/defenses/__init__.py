"""Robust aggregation inside MPC (see :mod:`pgkernels.defenses.robust`)."""

from .robust import bulyan, fedavg, fltrust, krum, krum_scores, median, multi_krum, norm_clip, trimmed_mean

__all__ = ["bulyan", "fedavg", "fltrust", "krum", "krum_scores", "median", "multi_krum", "norm_clip", "trimmed_mean"]
