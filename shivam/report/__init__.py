"""Interactive Plotly reports, written as self-contained HTML: predictions and validations."""

from shivam.report.prediction import prediction_report
from shivam.report.validation import validation_report

__all__ = ["prediction_report", "validation_report"]
