"""`bfx optimize`: strategy parameters searched with optuna on vectorised backtests.

`plan.py` decides the metric and the windows (holdout, walk-forward folds), `storage.py` where the
study lives, `trials.py` what one trial does and the worker processes, `run.py` ties them into a
report. See docs/optimize.md.
"""
