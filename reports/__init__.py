"""Self-contained HTML reports and matplotlib plots (``vfbench.reports``)."""
