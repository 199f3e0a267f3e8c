"""Code generators: loop-IR kernels to target source (C for CPUs)."""

from tessera.codegen.c import render_kernel, render_module

__all__ = ["render_kernel", "render_module"]
