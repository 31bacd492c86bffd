"""Robust aggregation inside MPC (see :mod:`pgkernels.defenses.robust`)."""

from .robust import fedavg, krum, krum_scores, median, multi_krum, trimmed_mean

__all__ = ["fedavg", "krum", "krum_scores", "median", "multi_krum", "trimmed_mean"]
