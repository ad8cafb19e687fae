"""Shared test helpers: seeding, devices, and tolerances by dtype."""

import pytest
import torch

torch.set_num_threads(2)

# Tolerances for float32/float64 comparisons against a plain reference
# (rtol, atol). float64 round-off over ~1e3-term dot products is ~1e-13, so
# 1e-10 leaves room; float32's epsilon is 1.2e-7 and the reductions here are
# a few hundred terms long, so ~1e-5 relative.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5)}


def devices():
    """CPU always; CUDA when present (queried lazily, never at import of test modules)."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (a scale-free error)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
