"""Run a compiled model built for a target this machine cannot load (e.g. Arm under qemu-user).

The model's C source is linked with one generic ``main`` harness into an executable for the
target. The harness knows nothing about the model: every size and path comes from its command
line::

    exe THREADS WEIGHTS_FILE WEIGHTS_BYTES ARENA_BYTES N_IN {IN_FILE IN_BYTES}... N_OUT {OUT_FILE OUT_BYTES}...

It reads the weights blob and each input from their files into 64-byte-aligned buffers, calls
``tsr_set_num_threads`` and ``tsr_run``, and writes each output to its file. Tensors travel as
raw little-endian bytes (both x86-64 and AArch64 Linux are little-endian).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera.runtime.inputs import bind_inputs, check_input
from tessera.runtime.program import ExecutionError
from tessera.targets.target import CpuTarget, load_target
from tessera.targets.toolchain import build_executable, run_executable

if TYPE_CHECKING:
    from tessera.compiler import Compilation
    from tessera.runtime.program import TensorSpec

__all__ = ["HARNESS", "EmulatedModel", "harness_source"]

HARNESS = r"""
/* ---- tessera generic run harness (same text for every model) ---- */
#include <stdio.h>
#include <errno.h>

static void* tsr_h_alloc(long long nbytes) {
  size_t n = (size_t)(nbytes > 0 ? nbytes : 1);
  n = (n + 63) / 64 * 64;  /* aligned_alloc wants a multiple of the alignment */
  void* p = aligned_alloc(64, n);
  if (p) memset(p, 0, n);
  return p;
}

static int tsr_h_read(const char* path, void* dst, long long nbytes) {
  FILE* f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "harness: cannot open %s: %s\n", path, strerror(errno)); return 0; }
  size_t got = nbytes > 0 ? fread(dst, 1, (size_t)nbytes, f) : 0;
  int extra = fgetc(f) != EOF;
  fclose(f);
  if ((long long)got != nbytes || extra) {
    fprintf(stderr, "harness: %s does not hold exactly %lld bytes\n", path, nbytes);
    return 0;
  }
  return 1;
}

static int tsr_h_write(const char* path, const void* src, long long nbytes) {
  FILE* f = fopen(path, "wb");
  if (!f) { fprintf(stderr, "harness: cannot create %s: %s\n", path, strerror(errno)); return 0; }
  size_t put = nbytes > 0 ? fwrite(src, 1, (size_t)nbytes, f) : 0;
  int ok = (long long)put == nbytes && fclose(f) == 0;
  if (!ok) fprintf(stderr, "harness: short write to %s\n", path);
  return ok;
}

int main(int argc, char** argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s THREADS WEIGHTS_FILE WEIGHTS_BYTES ARENA_BYTES N_IN {FILE BYTES}... "
                    "N_OUT {FILE BYTES}...\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]);
  const char* wpath = argv[2];
  long long wbytes = atoll(argv[3]);
  long long abytes = atoll(argv[4]);
  int a = 5;
  int n_in = atoi(argv[a++]);
  if (n_in < 0 || a + 2 * n_in >= argc) { fprintf(stderr, "harness: bad input count\n"); return 2; }
  void** inputs = (void**)calloc((size_t)n_in + 1, sizeof(void*));
  for (int i = 0; i < n_in; i++, a += 2) {
    long long nb = atoll(argv[a + 1]);
    inputs[i] = tsr_h_alloc(nb);
    if (!inputs[i] || !tsr_h_read(argv[a], inputs[i], nb)) return 3;
  }
  int n_out = atoi(argv[a++]);
  if (n_out < 1 || a + 2 * n_out != argc) { fprintf(stderr, "harness: bad output count\n"); return 2; }
  void** outputs = (void**)calloc((size_t)n_out, sizeof(void*));
  const char** out_paths = (const char**)calloc((size_t)n_out, sizeof(char*));
  long long* out_bytes = (long long*)calloc((size_t)n_out, sizeof(long long));
  for (int i = 0; i < n_out; i++, a += 2) {
    out_paths[i] = argv[a];
    out_bytes[i] = atoll(argv[a + 1]);
    outputs[i] = tsr_h_alloc(out_bytes[i]);
    if (!outputs[i]) return 3;
  }
  char* weights = (char*)tsr_h_alloc(wbytes);
  char* arena = (char*)tsr_h_alloc(abytes);
  if (!weights || !arena || !tsr_h_read(wpath, weights, wbytes)) return 3;
  tsr_set_num_threads(threads > 0 ? threads : 1);
  int status = tsr_run((void* const*)inputs, (void* const*)outputs, weights, arena);
  if (status != 0) { fprintf(stderr, "harness: tsr_run returned %d\n", status); return 4; }
  for (int i = 0; i < n_out; i++)
    if (!tsr_h_write(out_paths[i], outputs[i], out_bytes[i])) return 5;
  return 0;
}
"""


def harness_source(model_source: str) -> str:
    """The model's C translation unit followed by the generic ``main`` harness."""
    return model_source + "\n" + HARNESS


class EmulatedModel:
    """A compiled model run as an executable for its target (natively or under the target's emulator).

    ``model(x, y)`` or ``model({"x": x, "y": y})`` returns the outputs as NumPy arrays, like
    :class:`~tessera.runtime.CompiledModel`. Each call starts one process; that suits tests and
    cross-target checks, not serving.
    """

    def __init__(self, compilation: Compilation, target: str | CpuTarget | None = None,
                 num_threads: int = 1, timeout: float | None = 300.0) -> None:
        if target is None:
            target = compilation.manifest.target.name
        self.target = target if isinstance(target, CpuTarget) else load_target(target)
        built_for = compilation.manifest.target
        if self.target.arch != built_for.arch:
            raise ValueError(f"compilation was built for {built_for.name} ({built_for.arch}), "
                             f"not {self.target.name} ({self.target.arch})")
        self.manifest = compilation.manifest
        self.weights = np.ascontiguousarray(compilation.weights).reshape(-1).view(np.uint8)
        self.num_threads = num_threads
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory(prefix="tsr_emu_")  # removed with the object
        self._weights_path = Path(self._dir.name) / "weights.bin"
        self.weights.tofile(self._weights_path)
        self.executable = build_executable(harness_source(compilation.source), self.target,
                                           f"{self.manifest.model_name}_harness")

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.manifest.outputs]

    def __call__(self, *args: Any) -> list[np.ndarray]:
        """Run the model once in a fresh process; returns the outputs in manifest order."""
        values = bind_inputs(self.manifest.model_name, self.manifest.inputs, args)
        arrays = [np.ascontiguousarray(check_input(s, v)).astype(s.np_dtype.newbyteorder("<"), copy=False)
                  for s, v in zip(self.manifest.inputs, values, strict=True)]
        with tempfile.TemporaryDirectory(prefix="call_", dir=self._dir.name) as tmp:
            d = Path(tmp)
            argv: list[str] = [str(self.num_threads), str(self._weights_path), str(self.weights.nbytes),
                               str(self.manifest.arena_bytes), str(len(arrays))]
            for k, arr in enumerate(arrays):
                p = d / f"in{k}.bin"
                arr.tofile(p)
                argv += [str(p), str(arr.nbytes)]
            argv.append(str(len(self.manifest.outputs)))
            out_paths = [d / f"out{k}.bin" for k in range(len(self.manifest.outputs))]
            for p, spec in zip(out_paths, self.manifest.outputs, strict=True):
                argv += [str(p), str(spec.nbytes)]
            try:
                proc = run_executable(self.target, self.executable, argv, timeout=self.timeout)
            except subprocess.TimeoutExpired as e:
                raise ExecutionError(f"model {self.manifest.model_name!r} on {self.target.name}: "
                                     f"no result after {self.timeout} s") from e
            if proc.returncode != 0:
                raise ExecutionError(f"model {self.manifest.model_name!r} on {self.target.name}: harness "
                                     f"exited with status {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            return [_read(p, spec) for p, spec in zip(out_paths, self.manifest.outputs, strict=True)]

    def run_dict(self, *args: Any) -> dict[str, np.ndarray]:
        """Like calling the model, but returns ``{output name: array}``."""
        return dict(zip(self.output_names, self(*args), strict=True))

    def __repr__(self) -> str:
        return f"EmulatedModel({self.manifest.model_name!r}, target={self.target.name!r}, exe={self.executable})"


def _read(path: Path, spec: TensorSpec) -> np.ndarray:
    dt = spec.np_dtype.newbyteorder("<")
    data = np.fromfile(path, dtype=dt)
    return data.astype(spec.np_dtype, copy=False).reshape(spec.shape)

