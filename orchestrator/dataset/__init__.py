"""Datasets: concept folders under flux_data/ and sd-scripts' data.toml, checked and kept in sync.

    check_dataset(layout, toml_path=None, trainer_flags=None, verify=False) -> DatasetReport
    resolve_image_dir(layout, value) -> Path
"""

from __future__ import annotations

from orchestrator.dataset.check import check_dataset
from orchestrator.dataset.paths import resolve_image_dir
from orchestrator.dataset.report import DatasetReport, DatasetSummary, Problem, SubsetSummary

__all__ = ["check_dataset", "DatasetReport", "DatasetSummary", "Problem", "SubsetSummary", "resolve_image_dir"]
