import os
import pathlib

import pytest

# Real datasets are optional: point PGKERNELS_DATA at ../shared/datasets when present.
_shared = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
if "PGKERNELS_DATA" not in os.environ and _shared.is_dir():
    os.environ["PGKERNELS_DATA"] = str(_shared)


@pytest.fixture(params=[2, 3], ids=lambda n: f"{n}pc")
def world_size(request):
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU and pgkernels built with CUDA (skipped otherwise)")
