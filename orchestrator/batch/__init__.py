"""Batch generation: job files, a manifest, a multi-server scheduler, contact sheets."""
