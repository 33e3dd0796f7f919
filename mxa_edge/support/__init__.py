"""Plumbing shared by both sides (torch-free): errors and exit codes, atomic file writes, the
cache and data paths, progress bars, telemetry, machine facts (CPU ISA) and output-path checks.
No decision is made here.
"""
