"""Poisoning attacks: on records (data owners and federated clients) and on
federated updates. A library: no MPC, and no application code.

* :mod:`.records` -- label flipping, targeted source-to-target mislabelling
  and backdoor triggers (a pixel patch for images, fixed feature values for
  tabular data) on one owner's or client's ``(X, y)``;
* :mod:`.contamination` -- Hayes & Ohrimenko's contamination
  (``ManipulateData``): ``b`` records get attribute values ``a_1..a_k'`` and
  label ``l_r``; :func:`contaminate_text` inserts contamination words into
  documents;
* :mod:`.poisoning` -- :func:`poison_parties` applies any of those to any
  subset of the owners of a :class:`pgkernels.data.PartyData`;
* :mod:`.updates` -- model poisoning by malicious federated clients: sign
  flip, Gaussian, ALIE, IPM, Min-Max, Min-Sum, model-replacement scaling.
"""

from .contamination import (attribute_columns, attribute_mask, contaminate, contaminate_text,
                            default_contamination_words, insert_words)
from .poisoning import (ATTACKS, DEFAULT_CONTAMINATION, FRACTION_OF, backdoor_trigger, check_attackers, check_fraction,
                        default_contamination, default_source, default_target, poison_parties)
from .records import (RECORD_ATTACKS, Trigger, apply_trigger, backdoor, concentrated_targeted, image_trigger,
                      label_flip, make_trigger, tabular_trigger, targeted_mislabel)
from .updates import UPDATE_ATTACKS, alie, alie_z, gaussian, ipm, min_max, min_sum, scale, sign_flip

__all__ = [
    "ATTACKS", "DEFAULT_CONTAMINATION", "FRACTION_OF", "RECORD_ATTACKS", "Trigger", "UPDATE_ATTACKS", "alie",
    "alie_z", "apply_trigger", "attribute_columns", "attribute_mask", "backdoor", "backdoor_trigger",
    "check_attackers", "check_fraction", "concentrated_targeted", "contaminate", "contaminate_text",
    "default_contamination", "default_contamination_words", "default_source", "default_target", "gaussian",
    "image_trigger", "insert_words", "ipm", "label_flip", "make_trigger", "min_max", "min_sum", "poison_parties",
    "scale", "sign_flip", "tabular_trigger", "targeted_mislabel",
]
