"""The run report: one offline HTML page with views, metrics, speed, curves and the video."""

from kilonerf.report.build import write_report

__all__ = ["write_report"]
