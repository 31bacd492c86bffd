"""Package hygiene: one version everywhere, and the C++ layout rules.

The install-and-consume test of the C++ package (cmake --install, then
examples/cpp built with find_package(pgkernels REQUIRED)) is the ctest
``install_consumer`` (cmake/InstallConsumerTest.cmake), which scripts/test.sh
runs with the other C++ tests.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import pgkernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE_HEADERS = ("prg.h", "bits.h", "compare.h", "network.h", "ring.h")


def _version_file():
    text = (ROOT / "pgkernels" / "_version.py").read_text()
    found = re.search(r'^__version__ = "(\d+\.\d+\.\d+)"$', text, re.M)
    assert found, "pgkernels/_version.py must hold one line __version__ = \"MAJOR.MINOR.PATCH\""
    return found.group(1)


def test_python_package_version_is_the_version_file():
    assert pgkernels.__version__ == _version_file()


def test_setup_py_version_is_the_version_file():
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == _version_file()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_version_is_the_version_file(tmp_path):
    out = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), "-DPGKERNELS_BUILD_TESTS=OFF",
                          "-DPGKERNELS_BUILD_EXAMPLES=OFF"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    want = _version_file()
    config_version = (tmp_path / "pgkernelsConfigVersion.cmake").read_text()
    assert f'set(PACKAGE_VERSION "{want}")' in config_version
    header = (tmp_path / "include" / "pgkernels" / "version.h").read_text()
    assert f'#define PGKERNELS_VERSION "{want}"' in header
    major, minor, patch = want.split(".")
    assert f"#define PGKERNELS_VERSION_MAJOR {major}\n" in header
    assert f"#define PGKERNELS_VERSION_MINOR {minor}\n" in header
    assert f"#define PGKERNELS_VERSION_PATCH {patch}\n" in header


def _cxx_files():
    exts = {".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh"}
    return [p for d in ("csrc", "examples/cpp") for p in (ROOT / d).rglob("*") if p.suffix in exts]


def test_core_headers_are_included_as_pgkernels_only():
    bad = []
    plain = "|".join(re.escape(h) for h in CORE_HEADERS)
    pattern = re.compile(rf'#\s*include\s*(["<](\.\./)*core/|"({plain})")')
    for path in _cxx_files():
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not bad, "include the core's headers as <pgkernels/...>:\n" + "\n".join(bad)
    assert not list((ROOT / "csrc" / "core").glob("*.h")), "public headers live in csrc/pgkernels/"


def test_public_headers_are_torch_free_listed_and_installed():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    headers = sorted(p.name for p in (ROOT / "csrc" / "pgkernels").glob("*.h"))
    assert set(CORE_HEADERS) <= set(headers)
    listed = re.search(r"set\(PGKERNELS_PUBLIC_HEADERS(.*?)\)", cmake, re.S).group(1).split()
    assert sorted(pathlib.Path(h).name for h in listed) == headers
    for name in headers:
        for line in (ROOT / "csrc" / "pgkernels" / name).read_text().splitlines():
            m = re.match(r"\s*#\s*include\s*([<\"])([^>\"]+)", line)
            if m:  # the standard library or another public header, nothing else
                assert m.group(1) == "<" and ("/" not in m.group(2) or m.group(2).startswith("pgkernels/")), \
                    f"csrc/pgkernels/{name}: {line.strip()}"
    for src in (ROOT / "csrc" / "core").glob("*.cpp"):
        assert not re.search(r"#\s*include\s*[<\"](torch|ATen|c10|Python)", src.read_text()), src


def test_cmake_hygiene():
    files = [ROOT / "CMakeLists.txt", ROOT / "examples" / "cpp" / "CMakeLists.txt",
             *sorted((ROOT / "cmake").glob("*.cmake"))]
    for path in files:
        text = path.read_text().lower()
        assert "file(glob" not in text, f"{path.relative_to(ROOT)}: list sources, do not glob"
        assert "add_definitions" not in text, f"{path.relative_to(ROOT)}: use target_compile_definitions"
        assert "include_directories(" not in text.replace("target_include_directories(", ""), path
    top = (ROOT / "CMakeLists.txt").read_text()
    assert "NAMESPACE pgkernels::" in top and "EXPORT_NAME core" in top
    assert "write_basic_package_version_file" in top and "configure_package_config_file" in top
    assert "add_test(NAME install_consumer" in top
    example = (ROOT / "examples" / "cpp" / "CMakeLists.txt").read_text()
    assert "find_package(pgkernels REQUIRED)" in example
    assert "#include <pgkernels/compare.h>" in (ROOT / "examples" / "cpp" / "compare_example.cpp").read_text()


def test_cpu_wrappers_are_named_after_their_ops():
    schemas = set(re.findall(r'm\.def\("(\w+)\(', (ROOT / "csrc" / "ops.cpp").read_text()))
    seen = {}
    for path in sorted((ROOT / "csrc" / "cpu").glob("*_cpu.cpp")):
        for op, fn in re.findall(r'm\.impl\("(\w+)",\s*&(\w+)\)', path.read_text()):
            assert fn == f"{op}_cpu", f"{path.name}: op {op} is implemented by {fn}, expected {op}_cpu"
            assert op in schemas, f"{path.name}: {op} has no schema in csrc/ops.cpp"
            assert op not in seen, f"{op} registered in {seen.get(op)} and {path.name}"
            seen[op] = path.name
    assert seen.get("prg_fill_") == "prg_cpu.cpp"
    assert seen.get("bitslice") == seen.get("unbitslice") == "bits_cpu.cpp"
