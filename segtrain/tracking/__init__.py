"""Where a run is tracked: the table of loggers (``runtime.loggers``: csv, tensorboard, mlflow, wandb).

``table.LOGGERS`` names them; ``tracker.RunTracker`` fans a run's records out to the chosen
ones. This package module imports nothing, so the config checks can read the table without
pulling in the tracker (and the config it reads).
"""
