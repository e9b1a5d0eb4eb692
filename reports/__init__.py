"""Reports: the paper's tables, figures and an HTML page from a results directory (reads only results)."""
from lamp_bench.reports.build import FORMATS, build_report

__all__ = ["FORMATS", "build_report"]
