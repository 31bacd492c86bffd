"""Secure protocols: rounds of local kernels plus communication."""
