"""Datasets from their standard distribution files, and party/client splits.

The package needs no data directory: ``load("digits")`` uses scikit-learn's
bundled digits. Other datasets are read from a data directory -- the
``data_dir`` argument, else the ``PGKERNELS_DATA`` environment variable --
holding the original files:

=================  ==========================================================
``adult``          ``adult/adult.data``, ``adult/adult.test`` (UCI Adult)
``credit_default`` ``credit_default/UCI_Credit_Card.csv`` (UCI default of credit card clients)
``mnist``          ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
``fashion_mnist``  ``fashion_mnist/`` with the same four idx files
``newsgroups``     ``20newsgroups/``: a ``20news-bydate*.tar.gz`` or the extracted
                   ``20news-bydate-train/`` and ``20news-bydate-test/`` folders
``digits``         none (scikit-learn's copy)
=================  ==========================================================

(the files may also sit directly in the data directory). A missing file
raises ``FileNotFoundError`` naming the file and every place looked.

:func:`make_parties` splits a dataset among data owners (Hayes & Ohrimenko:
10 parties x 2,000 records, 10,000 validation records), iid or by an attribute.
"""

from .datasets import DATASETS, Dataset, data_dir, load
from .parties import PartyData, make_parties
from .splits import dirichlet_split, group_split, iid_split

__all__ = ["DATASETS", "Dataset", "PartyData", "data_dir", "dirichlet_split", "group_split", "iid_split", "load",
           "make_parties"]
