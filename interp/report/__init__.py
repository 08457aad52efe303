"""``interp report``: every analysis on one model, in one self-contained HTML file.

>>> from interp.report import build_report
>>> report = build_report(out="report.html")          # doctest: +SKIP
>>> report.summary()                                   # doctest: +SKIP
"""

from interp.report.build import DEFAULT_EXAMPLE, Report, ReportSettings, build_report

__all__ = ["DEFAULT_EXAMPLE", "Report", "ReportSettings", "build_report"]
