"""Compile rendered C kernels into a shared library and call them through ctypes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tessera.codegen import render_kernel, render_module
from tessera.loop.ir import Kernel

from .kernels import LANES

CFLAGS = ["-O3", "-march=haswell", "-mfma", "-fopenmp", "-shared", "-fPIC", "-Wall",
          "-Werror=implicit-function-declaration"]


class Built:
    """A compiled module: ``run(kernel, arrays)`` calls the kernel's C function on the arrays."""

    def __init__(self, lib_path: Path, source: str) -> None:
        self.path = lib_path
        self.source = source
        self.lib = ctypes.CDLL(str(lib_path))

    def run(self, kernel: Kernel, arrays: list[np.ndarray]) -> None:
        for buf, arr in zip(kernel.params, arrays, strict=True):
            assert arr.flags.c_contiguous and arr.shape == buf.shape, buf.name
        fn = getattr(self.lib, kernel.name)
        fn.restype = None
        fn(*(a.ctypes.data_as(ctypes.c_void_p) for a in arrays))


@pytest.fixture
def build(tmp_path: Path) -> Callable[..., Built]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")

    def compile_kernels(kernels: list[Kernel], lanes: dict[str, int] | None = None) -> Built:
        funcs = [render_kernel(k, LANES if lanes is None else lanes) for k in kernels]
        src = render_module(funcs, "")
        c_path, so_path = tmp_path / "mod.c", tmp_path / f"mod{len(list(tmp_path.iterdir()))}.so"
        c_path.write_text(src)
        proc = subprocess.run(["gcc", *CFLAGS, str(c_path), "-o", str(so_path), "-lm"], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr, proc.stderr
        return Built(so_path, src)

    return compile_kernels
