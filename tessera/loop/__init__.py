"""Loop-level IR: expressions, tensor expressions (compute definitions), loop nests."""
