"""Integrations with FL frameworks: :mod:`pgkernels.integrations.flower` (needs ``flwr``)."""
