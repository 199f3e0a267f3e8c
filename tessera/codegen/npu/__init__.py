"""The NPU back-end: partitioning (:mod:`.partition`), GEMM lowering and tiling (:mod:`.gemm`, :mod:`.lower`),
tiling search on the simulator (:mod:`.search`); capabilities read from the description (:mod:`.machine`)."""
