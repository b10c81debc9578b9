"""inspectloop: keeps factory vision-inspection models accurate."""

__version__ = "0.1.0"
