"""Secure protocols: rounds of local kernels plus communication.

Layer: above :mod:`pgkernels.runtime` (processes, dealer, communication) and
:mod:`pgkernels.ops` (the compiled kernels), below :mod:`pgkernels.defenses`
(the rules). Modules import only ``runtime``, ``ops`` and each other.

The stated API for code above this package:

* :mod:`.blocks` -- the building blocks the rules are made of (share
  plumbing, batched comparison and bit injection, ranks, sorting networks,
  row selection, weighted sums), each with its rounds, bytes and what it
  reveals;
* :mod:`.compare` (comparisons, ReLU, select), :mod:`.order` (order
  statistics), :mod:`.linalg` (Gram matrix, distances, cosines),
  :mod:`.roots` (square roots), :mod:`.truncation` (exact division),
  :mod:`.validity` (input checks on shares), :mod:`.nn` (batched secure
  inference of small torch models), :mod:`.cost` (the planner's cost model),
  :mod:`.shares` (share plumbing, also in :mod:`.blocks`): their public
  (non-underscore) names.
"""
