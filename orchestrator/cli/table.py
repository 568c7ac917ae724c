"""Moved to orchestrator.table (library code renders tables too); this name stays for code not yet updated."""

from orchestrator.table import render_table

__all__ = ["render_table"]
