"""Metrics as three pure steps: extractor (clips -> features), statistic (features -> float64 state),
score (states -> number). ``vfbench.metrics``."""
