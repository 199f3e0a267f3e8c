"""Schedules as data: replayable primitive traces, generic default rules, and their
application to a group's stages to produce a loop-IR kernel."""
