"""The Dagster code of the exporter (assets, checks, jobs, automation, IO managers).

Two Dagster APIs it relies on deliberately are not yet marked stable: the asset backfill policy
(beta) and per-day asset checks (preview). Their warnings are silenced here, before any definition
is built, by exact message, so every other Dagster warning still shows.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", r"Parameter `backfill_policy` of function `asset`", dg.BetaWarning)
warnings.filterwarnings("ignore", r"Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)
