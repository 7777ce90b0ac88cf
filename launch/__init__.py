"""The launchers: `strongroom dev` and `strongroom serve`, the only code that composes services in one process."""
