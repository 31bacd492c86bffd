"""Target for the multi-host CLI test: python -m pgkernels.party --run tests/party_target.py:main"""

import torch


def main():
    import crypten

    import pgkernels

    x = crypten.cryptensor(torch.tensor([-2.0, 0.0, 3.0]))
    return pgkernels.ltz(x).get_plain_text().tolist()
