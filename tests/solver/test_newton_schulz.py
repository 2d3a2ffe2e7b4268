"""Muon's Newton-Schulz in a chosen dtype: bf16 is torch's Muon to the bit, fp32 the same
algorithm at full precision, "auto" the device's fastest (measured once and logged)."""

import logging

import pytest
import torch

from pgtrain.errors import ConfigError
from pgtrain.solver import MuonAdamW
from pgtrain.solver.hybrid import FlatMuon
from pgtrain.solver.newton_schulz import fastest_dtype, orthogonalize, resolve_ns_dtype


def steps(optimizer_cls, shapes, n=3, **kwargs):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    optimizer = optimizer_cls(params, lr=0.02, weight_decay=0.1, **kwargs)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("rule", ["original", "match_rms_adamw", "spectral_unclamped"])
def test_bf16_is_torchs_muon_to_the_bit(nesterov, rule):
    shapes = [(8, 16), (16, 8), (12, 12)]  # wide, tall, square
    ours = steps(FlatMuon, shapes, ns_dtype="bf16", nesterov=nesterov, adjust_lr_fn=rule)
    torchs = steps(torch.optim.Muon, shapes, nesterov=nesterov, adjust_lr_fn=rule)
    for a, b in zip(ours, torchs, strict=True):
        assert torch.equal(a, b)


def test_fp32_runs_the_same_iteration_at_full_precision():
    matrix = torch.randn(16, 48)
    coefficients = (3.4445, -4.7750, 2.0315)
    full = orthogonalize(matrix, coefficients, 5, 1e-7, torch.float32)
    half = orthogonalize(matrix, coefficients, 5, 1e-7, torch.bfloat16)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    torch.testing.assert_close(full, half.float(), atol=0.05, rtol=0.05)
    # Orthogonalized: the singular values sit near 1 (within the quintic's band), not near 0.
    values = torch.linalg.svdvals(full)
    assert values.min() > 0.5 and values.max() < 1.5
    ours = steps(FlatMuon, [(8, 16)], ns_dtype="fp32")
    bf16 = steps(FlatMuon, [(8, 16)], ns_dtype="bf16")
    assert not torch.equal(ours[0], bf16[0])
    torch.testing.assert_close(ours[0], bf16[0], atol=0.02, rtol=0.02)


def test_auto_measures_the_device_once_and_logs_its_choice(caplog, monkeypatch):
    from pgtrain.solver import newton_schulz

    monkeypatch.setattr(newton_schulz, "_CHOSEN", {})
    with caplog.at_level(logging.INFO, logger="pgtrain.solver.newton_schulz"):
        first = fastest_dtype(torch.device("cpu"))
        second = fastest_dtype(torch.device("cpu"))
    assert first == second and first in ("bf16", "fp32")
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith(f"Muon's Newton-Schulz runs in {first} on cpu")
    assert resolve_ns_dtype("auto", torch.device("cpu")) == {"bf16": torch.bfloat16}.get(
        first, torch.float32
    )


def test_an_unknown_dtype_is_one_line_and_the_hybrid_passes_it_on():
    with pytest.raises(ConfigError, match=r"ns_dtype='bfloat' is not a dtype; use 'auto' or one"):
        FlatMuon([torch.nn.Parameter(torch.randn(4, 4))], ns_dtype="bfloat")
    groups = [
        {"params": [torch.nn.Parameter(torch.randn(4, 4))], "optimizer": "muon"},
        {"params": [torch.nn.Parameter(torch.randn(4))], "optimizer": "adamw"},
    ]
    hybrid = MuonAdamW(groups, ns_dtype="fp32")
    muon_group = next(g for g in hybrid.param_groups if g["optimizer"] == "muon")
    assert muon_group["ns_dtype"] == "fp32"


@pytest.mark.parametrize("bf16_ms, chosen", [(54.0, "fp32"), (0.5, "bf16")])
def test_auto_takes_fp32_where_bf16_arithmetic_is_emulated(caplog, monkeypatch, bf16_ms, chosen):
    # One of the project's machines (AVX2, no bf16 arithmetic) multiplies bf16 matrices 54x
    # slower than fp32: the measurement must pick fp32 there, and bf16 where it is faster.
    from pgtrain.solver import newton_schulz

    monkeypatch.setattr(newton_schulz, "_CHOSEN", {})
    times = {torch.bfloat16: bf16_ms / 1e3, torch.float32: 1e-3}
    monkeypatch.setattr(newton_schulz, "_matmul_time", lambda dtype, device: times[dtype])
    with caplog.at_level(logging.INFO, logger="pgtrain.solver.newton_schulz"):
        assert resolve_ns_dtype("auto", torch.device("cpu")) == NS_DTYPES_BY_NAME[chosen]
    assert f"runs in {chosen} on cpu (a 256 x 768 matrix product: bf16 {bf16_ms:.3g} ms" in (
        caplog.text
    )


NS_DTYPES_BY_NAME = {"bf16": torch.bfloat16, "fp32": torch.float32}
