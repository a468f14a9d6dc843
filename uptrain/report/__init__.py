"""Reports of a run: the Markdown report and the terminal summary table."""

from uptrain.report.markdown import console_table, render_report, results_table

__all__ = ["results_table", "render_report", "console_table"]
