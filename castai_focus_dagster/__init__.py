"""castai-focus-dagster: Cast AI workload costs as FOCUS 1.3 data, orchestrated by Dagster."""

__version__ = "0.1.0"
