from tests.codegen.conftest import build  # noqa: F401  (compile-and-call fixture for generated kernels)
