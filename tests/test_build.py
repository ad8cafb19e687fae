"""Packaging (issue 9, item 5): what `pip install dgl-rs` pulls, and a wheel PyPI takes.

The cheap checks read pyproject.toml and the built extension; the slow one builds the
wheel with maturin (reusing the release build in target/) and checks its tag, that it
bundles no libtorch, and its dependencies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dgl_rs

ROOT = Path(__file__).resolve().parents[1]
TAG = "manylinux_2_34"
GLIBC_MAX = (2, 34)

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(pyproject) -> list[str]:
    extras = pyproject["project"]["optional-dependencies"].values()
    return [*pyproject["project"]["dependencies"], *(r for group in extras for r in group),
            *(line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())]


def test_the_cli_needs_install_with_the_package(pyproject):
    deps = {re.split(r"[=<>! \[]", d)[0].lower(): d for d in pyproject["project"]["dependencies"]}
    assert {"torch", "torchvision", "open-clip-torch", "av", "numpy", "safetensors", "tqdm"} <= set(deps)
    assert deps["torch"] == "torch==2.11.0"


def test_torchvision_is_pinned_wherever_it_is_pulled(pyproject):
    pulled = [r for r in _requirements(pyproject) if r.lower().startswith("torchvision")]
    assert pulled and all(r == "torchvision==0.26.0" for r in pulled), pulled


def test_the_wheel_is_tagged_manylinux_without_bundling_libtorch(pyproject):
    maturin = pyproject["tool"]["maturin"]
    assert maturin["compatibility"] == TAG
    assert maturin["auditwheel"] == "skip"  # a repair would copy libtorch (GBs) into the wheel


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol versions")
def test_the_extension_needs_no_newer_glibc_than_its_tag():
    """The manylinux_2_34 tag promises glibc 2.34: the .so must reference no newer
    GLIBC_x.y symbol version (read from its version-needed strings)."""
    so = Path(dgl_rs._native.__file__).read_bytes()
    versions = {tuple(map(int, m)) for m in re.findall(rb"GLIBC_(\d+)\.(\d+)", so)}
    assert versions and max(versions) <= GLIBC_MAX, sorted(versions)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("maturin", path=os.path.dirname(sys.executable) + os.pathsep
                                 + os.environ.get("PATH", "")) is None or shutil.which("cargo") is None,
                    reason="needs maturin and cargo")
def test_built_wheel_tag_and_contents(tmp_path):
    maturin = shutil.which("maturin", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env = {**os.environ, "LIBTORCH_USE_PYTORCH": "1"}
    proc = subprocess.run([maturin, "build", "--release", "-q", "-o", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.endswith(f"-cp39-abi3-{TAG}_x86_64.whl"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert not [n for n in names if re.search(r"lib(torch|c10)[^/]*\.so", n)], "libtorch bundled"
    assert "dgl_rs/_native.abi3.so" in names and "dgl_rs/assets/synthetic-tiny.safetensors" in names
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    assert "torchvision==0.26.0" in requires and any(r.startswith("av") for r in requires), requires
