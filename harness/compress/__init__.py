"""Compressed backbones as a grid axis (``compress:`` in a grid; DESIGN.md "Compression").

``config`` parses an entry (no torch), ``checks`` validates it against a backbone at expansion,
``backbone`` turns a resolved backbone into its compressed twin (cached), ``apply`` /
``algorithms`` do the work per layer, ``adapter`` is the one module that calls the pinned
libraries (torchao, torch-pruning), ``board`` builds the pairing table and Pareto plots.
"""
from .config import compress_label, compress_level, parse_compress

__all__ = ["compress_label", "compress_level", "parse_compress"]
