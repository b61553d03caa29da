"""castai-focus-dagster: Cast AI workload costs as FOCUS 1.3 data, orchestrated by Dagster."""
