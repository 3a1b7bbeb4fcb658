"""`bfx optimize`: strategy parameters searched with optuna on vectorised backtests.

`plan.py` decides the metric and the windows (holdout, walk-forward folds), `storage.py` where
the study lives, `trials.py` what one trial does, `pool.py` the worker processes of `--jobs`,
`run.py` runs the folds and `report.py` holds what they found. See docs/optimize.md.
"""
