"""Compute-precision selection: ``precision="auto"`` follows the hardware, and a forced ``"bf16"``
on a CPU that would emulate it is honoured with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from sb3_dreamer import Dreamer
from sb3_dreamer import precision as precision_module
from sb3_dreamer.precision import active_compute_dtype, autocast, cpu_has_fast_bf16, resolve_precision
from tests.conftest import CueEnv

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def native_bf16(request, monkeypatch) -> bool:
    """Pretend the CPU has (or lacks) native bfloat16 instructions."""
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: request.param)
    return request.param


def test_detection_reads_the_cpu_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        flags = set(cpuinfo.read().split())
    assert cpu_has_fast_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [
        ("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),  # AVX-512 without its bf16 part
        ("flags\t\t: fpu avx2 avx512f avx512_bf16\n", True),
        ("flags\t\t: fpu avx2 amx_tile amx_bf16\n", True),
        (None, False),  # no /proc/cpuinfo (not Linux)
    ],
)
def test_detection_of_native_bf16_flags(cpuinfo, expected, monkeypatch):
    import io

    def fake_open(path, *args, **kwargs):
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(precision_module, "open", fake_open, raising=False)
    cpu_has_fast_bf16.cache_clear()
    try:
        assert cpu_has_fast_bf16() is expected
    finally:
        cpu_has_fast_bf16.cache_clear()


def test_auto_follows_the_cpu(native_bf16):
    expected = torch.bfloat16 if native_bf16 else torch.float32
    assert resolve_precision("auto", CPU) == expected


def test_forced_precisions_are_honoured(native_bf16):
    assert resolve_precision("fp32", CPU) == torch.float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("bf16", CPU) == torch.bfloat16
    messages = [str(warning.message) for warning in caught if issubclass(warning.category, UserWarning)]
    if native_bf16:
        assert messages == []
    else:
        assert len(messages) == 1 and "emulated" in messages[0]


def test_unknown_precision_raises():
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU)


def test_model_takes_the_resolved_dtype(native_bf16, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "precision": "auto"})
    assert model.policy.compute_dtype == (torch.bfloat16 if native_bf16 else torch.float32)


def test_autocast_sets_the_matmul_dtype():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast(CPU, torch.bfloat16):
        assert active_compute_dtype("cpu") == torch.bfloat16
        assert layer(x).dtype == torch.bfloat16
    with autocast(CPU, torch.float32):
        assert active_compute_dtype("cpu") == torch.float32
        assert layer(x).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_takes_bf16_only_where_it_is_native(native, monkeypatch):
    # torch's default counts emulated bfloat16 (GPUs before Ampere) as supported
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    expected = torch.bfloat16 if native else torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == expected


def test_gru_gates_are_computed_in_float32_under_bf16_autocast():
    from sb3_dreamer.networks import LayerNormGRUCell

    cell = LayerNormGRUCell(2, 4)
    with torch.no_grad():
        cell.linear.weight.zero_()  # gates = the LayerNorm's bias
        cell.norm.bias.zero_()
        cell.norm.bias[8:] = -6.0  # update = sigmoid(-7) = 0.00091: 1 - update is 1.0 in bfloat16
    x, h = torch.zeros(1, 2), torch.full((1, 4), 1000.0)
    expected = (1.0 - torch.sigmoid(torch.tensor(-7.0))) * 1000.0  # the candidate is tanh(0) = 0
    with autocast(CPU, torch.bfloat16):
        out = cell(x, h)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 4), expected.item()))


def test_standard_gru_gates_are_computed_in_float32_under_bf16_autocast():
    from sb3_dreamer.networks import StandardGRUCell

    cell = StandardGRUCell(2, 4)
    with torch.no_grad():
        for param in cell.parameters():
            param.zero_()
        cell.bias_hh[4:8] = 7.0  # update = sigmoid(7) = 0.99909: 1.0 in bfloat16, the state kept whole
    x, h = torch.zeros(1, 2), torch.full((1, 4), 1000.0)
    expected = torch.sigmoid(torch.tensor(7.0)) * 1000.0  # the candidate is tanh(0) = 0
    with autocast(CPU, torch.bfloat16):
        out = cell(x, h)
        parent_out = torch.nn.GRUCell.forward(cell, x, h)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 4), expected.item()))
    assert not torch.allclose(parent_out, out)  # torch's own cell loses the update here


def test_standard_gru_matches_torch_gru_cell_in_float32():
    from sb3_dreamer.networks import StandardGRUCell

    torch.manual_seed(0)
    cell = StandardGRUCell(5, 7)
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    torch.testing.assert_close(cell(x, h), torch.nn.GRUCell.forward(cell, x, h))
    torch.testing.assert_close(cell(x), torch.nn.GRUCell.forward(cell, x))
