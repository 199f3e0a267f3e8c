"""Tessera's benchmark harness: peers vs Tessera on the zoo models, against measured machine peaks."""
