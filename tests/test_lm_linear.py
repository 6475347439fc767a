"""Fast CPU linear layers (the native few-row kernel, oneDNN packed weights): same results as F.linear, the same
greedy tokens as the plain path, refreshed when weights change, fallbacks and off switch."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from wavecraft.lm import linear as fast
from wavecraft.lm import native, native_step
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions, SamplingParams, generate
from wavecraft.lm.model import LMModel

can_build = native._cpu_supported() and native._torch_uses_libgomp() and (shutil.which("cc") or shutil.which("gcc"))


def check_matches_f_linear():
    weight = torch.randn(96, 32)
    bias = torch.randn(96)
    with torch.inference_mode():
        for shape in [(2, 1, 32), (1, 32), (3, 7, 32), (40, 32)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(fast.linear(x, weight, bias), F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast.linear(x, weight, rows=(32, 64)), F.linear(x, weight[32:64]),
                                       atol=1e-5, rtol=1e-5)


def test_matches_f_linear_for_any_rows():
    check_matches_f_linear()


def test_packed_fallback_matches_f_linear(native_off):
    assert not native.available()
    check_matches_f_linear()


@pytest.mark.skipif(not can_build, reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_native_kernel_shapes(native_isa):
    """Every row count the kernel takes (its two register tiles, groups of 8 rows), output counts that are not a
    multiple of the tiles, K across several K tiles and ending in half a 16-float vector, strided input rows, row
    slices of the weight; for AVX2 and (where the CPU has it) AVX-512."""
    assert native.available()
    torch.manual_seed(0)
    for m in [1, 2, 3, 4, 5, 8, 9, 17, native.MAX_ROWS]:
        for n, k in [(7, 8), (13, 520), (64, 1032)]:
            x = torch.randn(m, 2 * k)[:, :k]  # rows 2k apart
            weight, bias = torch.randn(n + 5, k), torch.randn(n)
            assert native.supports(x, weight[5:])
            got = native.linear(x, weight[5:], bias)
            torch.testing.assert_close(got, F.linear(x, weight[5:], bias), atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(native.linear(x, weight), x @ weight.T, atol=1e-4, rtol=1e-5)
            # int8 weights with one scale per row (their own tiles)
            q, scale = torch.randint(-127, 128, (n + 5, k), dtype=torch.int8), torch.rand(n + 5) + 0.5
            assert native.supports(x, q[5:])
            torch.testing.assert_close(native.linear(x, q[5:], bias, scale[5:]),
                                       F.linear(x, q[5:].float() * scale[5:, None], bias), atol=1e-2, rtol=1e-4)
    assert not native.supports(torch.randn(2, 12), torch.randn(4, 12))  # K not a multiple of 8
    assert not native.supports(torch.randn(native.MAX_ROWS + 1, 8), torch.randn(4, 8))
    assert not native.supports(torch.randn(2, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="scales"):
        native.linear(torch.randn(2, 8), torch.zeros(4, 8, dtype=torch.int8))


@pytest.mark.skipif(not can_build, reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_kernels_are_built_for_the_cpus_widest_vectors(rebuild_native):
    """AVX-512 where the CPU has it, else AVX2; WAVECRAFT_NATIVE_ISA=avx2 asks for AVX2, a library of its own."""
    has_avx512 = "avx512f" in native._cpu_flags()
    rebuild_native(WAVECRAFT_NATIVE_ISA=None)
    assert native.isa() == ("avx512" if has_avx512 else "avx2")
    widest = native.library()._name
    rebuild_native(WAVECRAFT_NATIVE_ISA="avx2")
    assert native.isa() == "avx2"
    assert (native.library()._name != widest) == has_avx512


@pytest.mark.skipif(not can_build, reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_a_compiler_without_avx512_gets_the_avx2_build(rebuild_native, tmp_path, caplog):
    """A compiler that refuses -mavx512f (an old one): the kernels are built for AVX2 instead of not at all."""
    real = shutil.which("gcc") or shutil.which("cc")
    fake = tmp_path / "cc"
    fake.write_text('#!/bin/sh\ncase "$*" in *-mavx512f*) echo "unknown option" >&2; exit 1;; esac\n'
                    f'exec {real} "$@"\n')
    fake.chmod(0o755)
    rebuild_native(CC=str(fake), WAVECRAFT_CACHE=str(tmp_path / "cache"), WAVECRAFT_NATIVE_ISA=None)
    with caplog.at_level(logging.WARNING, logger="wavecraft.lm.native"):
        assert native.available() and native.isa() == "avx2"
    x, weight = torch.randn(2, 24), torch.randn(5, 24)
    torch.testing.assert_close(native.linear(x, weight), x @ weight.T, atol=1e-5, rtol=1e-5)
    if "avx512f" in native._cpu_flags():
        assert "building for AVX2" in caplog.text


@pytest.mark.skipif(not can_build, reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_fast_paths_give_the_plain_greedy_tokens(monkeypatch):
    """Native decoding step, packed oneDNN fallback and plain F.linear decode the same greedy tokens (random
    weights)."""
    torch.manual_seed(0)
    lm = LMModel(LMConfig(dim=64, num_heads=4, num_layers=2, card=64, n_q=4, delays=(0, 1, 2, 3),
                          cross_attention=True)).eval()
    cond = Conditions(cross_src=torch.randn(2, 3, 64), cross_mask=torch.ones(2, 3, dtype=torch.long))
    null = Conditions(cross_src=torch.zeros(2, 3, 64), cross_mask=torch.zeros(2, 3, dtype=torch.long))
    greedy = SamplingParams(use_sampling=False)

    calls = []
    step = native_step.DecodePlan.__call__
    monkeypatch.setattr(native_step.DecodePlan, "__call__", lambda *args: calls.append(1) or step(*args))
    with_native = generate(lm, cond, 24, null=null, sampling=greedy)
    assert len(calls) >= 24  # every one-position step ran natively
    was = fast.is_enabled()
    try:
        fast.set_enabled(False)
        plain = generate(lm, cond, 24, null=null, sampling=greedy)
    finally:
        fast.set_enabled(was)
    monkeypatch.setenv("WAVECRAFT_NATIVE", "0")
    native.reset()
    try:
        packed = generate(lm, cond, 24, null=null, sampling=greedy)
    finally:
        monkeypatch.delenv("WAVECRAFT_NATIVE")
        native.reset()
    assert torch.equal(with_native, plain) and torch.equal(packed, plain)


def test_build_failure_falls_back(monkeypatch, rebuild_native, tmp_path, caplog):
    """A compiler that fails: one warning, PyTorch's kernels, the same results."""
    monkeypatch.setattr(native, "_cpu_supported", lambda: True)
    rebuild_native(CC=str(tmp_path / "no-such-compiler"), WAVECRAFT_CACHE=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="wavecraft.lm.native"):
        assert not native.available()
    if native._torch_uses_libgomp():
        assert "could not build the native decoding kernel" in caplog.text
    check_matches_f_linear()


def test_repacks_after_in_place_update(native_off):
    weight = torch.nn.Parameter(torch.randn(16, 8))
    x = torch.randn(2, 8)
    with torch.inference_mode():
        fast.linear(x, weight)
    with torch.no_grad():
        weight.mul_(2)
    with torch.inference_mode():
        torch.testing.assert_close(fast.linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_gradients_and_switch():
    weight = torch.randn(16, 8, requires_grad=True)
    x = torch.randn(2, 8)
    fast.linear(x, weight).sum().backward()  # grad mode: plain F.linear, differentiable
    assert weight.grad is not None
    was = fast.is_enabled()
    try:
        fast.set_enabled(False)
        with torch.inference_mode():
            assert torch.equal(fast.linear(x, weight), F.linear(x, weight))
    finally:
        fast.set_enabled(was)


@pytest.mark.skipif(not can_build, reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_eager_calls_skip_the_custom_op_wrapper():
    """Eager decoding calls the kernel directly: the custom op's wrapper imports torch._dynamo on first use, which
    once added 2 s to the first streamed chunk."""
    code = ("import sys, torch; from wavecraft.lm import native; "
            "y = native.linear(torch.randn(2, 8), torch.randn(4, 8)); print(y.shape, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["torch.Size([2,", "4])", "False"]
