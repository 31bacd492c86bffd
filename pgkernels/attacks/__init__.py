"""Data-poisoning attacks by data owners who pool their records.

* :func:`contaminate` -- Hayes & Ohrimenko's contamination (``ManipulateData``):
  ``b`` records get attribute values ``a_1..a_k'`` and label ``l_r``;
  :func:`contaminate_text` inserts contamination words into documents;
* label flipping, backdoor triggers (a pixel patch for images, fixed feature
  values for tabular data) and targeted source-to-target mislabelling, from
  :mod:`pgkernels.fl.attacks`;
* :func:`poison_parties` applies any of them to any subset of the owners of a
  :class:`pgkernels.data.PartyData`.
"""

from ..fl.attacks import (Trigger, apply_trigger, backdoor, image_trigger, label_flip, make_trigger, tabular_trigger,
                          targeted_mislabel)
from .contamination import (attribute_columns, attribute_mask, contaminate, contaminate_text,
                            default_contamination_words, insert_words)
from .poisoning import (ATTACKS, DEFAULT_CONTAMINATION, FRACTION_OF, backdoor_trigger, check_attackers, check_fraction,
                        default_contamination, default_source, default_target, poison_parties)

__all__ = [
    "ATTACKS", "DEFAULT_CONTAMINATION", "FRACTION_OF", "Trigger", "apply_trigger", "attribute_columns",
    "attribute_mask", "backdoor", "backdoor_trigger", "check_attackers", "check_fraction", "contaminate",
    "contaminate_text", "default_contamination", "default_contamination_words", "default_source", "default_target",
    "image_trigger", "insert_words", "label_flip", "make_trigger", "poison_parties", "tabular_trigger",
    "targeted_mislabel",
]
