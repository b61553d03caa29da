"""The sandbox's workloads: templates, per-workload parameters and the exact per-hour model of metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from castai_focus_dagster.castai.models import TIERS
from castai_focus_dagster.castai.sandbox.discounts import (
    discounted,
)
from castai_focus_dagster.castai.sandbox.hours import noise
from castai_focus_dagster.castai.sandbox.metrics import (
    NOISE_DAY,
    NOISE_HOUR,
    NOISE_SPOT,
    NOISE_SPOT_DAY,
    NOISE_SPOT_PRICE,
    NOISE_STORAGE,
)


class WorkloadTemplate(NamedTuple):
    namespace: str
    kind: str
    name: str
    team: str | None
    cpu: float  # vCPU requested per pod
    ram_gib: float  # GiB requested per pod
    pods: tuple[float, float, float]  # base pods on-demand / spot / spot-fallback
    diurnal: float  # amplitude of the daily load curve
    run: tuple[int, int, int, int]  # runs hours [start, end) of the day, minutes per hour, every N days
    storage_gib: float = 0.0
    gpu: float = 0.0  # GPUs per pod
    interruption: float = 0.12  # share of hours with a spot interruption (spot workloads only)


_ALWAYS = (0, 24, 60, 1)
_T = WorkloadTemplate
_FR_TEAM = "données-équipe"  # a non-ASCII label value on purpose
TEMPLATES: tuple[WorkloadTemplate, ...] = (
    _T("payments", "Deployment", "payments-api", "payments", 0.5, 1.0, (3, 2, 0), 0.30, _ALWAYS),
    _T("payments", "StatefulSet", "payments-db", "payments", 2.0, 8.0, (2, 0, 0), 0.0, _ALWAYS, 200),
    _T("checkout", "Deployment", "checkout-web", "web", 0.25, 0.5, (2, 4, 1), 0.40, _ALWAYS),
    _T("checkout", "Deployment", "cart-service", "web", 0.5, 1.0, (1, 3, 0), 0.35, _ALWAYS),
    _T("data-platform", "StatefulSet", "kafka", _FR_TEAM, 2.0, 6.0, (3, 0, 0), 0.0, _ALWAYS, 500),
    _T("data-platform", "CronJob", "nightly-etl", _FR_TEAM, 4.0, 16.0, (0, 2, 1), 0.0, (1, 5, 45, 1)),
    _T("data-platform", "Job", "backfill", _FR_TEAM, 1.0, 4.0, (0, 4, 0), 0.0, (10, 14, 60, 2)),
    _T("observability", "DaemonSet", "node-exporter", "sre", 0.1, 0.125, (4, 3, 1), 0.0, _ALWAYS),
    _T("observability", "StatefulSet", "prometheus", "sre", 1.0, 4.0, (1, 0, 0), 0.0, _ALWAYS, 100),
    _T("kube-system", "DaemonSet", "kube-proxy", None, 0.1, 0.1, (4, 3, 1), 0.0, _ALWAYS),
    _T("batch", "CronJob", "report-generator", "finance", 0.5, 2.0, (1, 0, 0), 0.0, (6, 18, 20, 1)),
    _T("search", "Deployment", "search-api", "search", 1.0, 2.0, (2, 2, 0), 0.25, _ALWAYS),
    _T("search", "StatefulSet", "elasticsearch", "search", 2.0, 8.0, (3, 0, 0), 0.0, _ALWAYS, 300),
    _T("web", "Deployment", "frontend", "web", 0.25, 0.5, (0, 3, 1), 0.50, _ALWAYS),
    _T("auth", "Deployment", "auth-service", "identity", 0.5, 1.0, (2, 0, 0), 0.20, _ALWAYS),
)  # fmt: skip
# Exactly one of each in the organisation: (template, index of the cluster that runs it).
SPECIAL_WORKLOADS: tuple[tuple[WorkloadTemplate, int], ...] = (
    (_T("ml", "Deployment", "llm-inference", "ml", 4.0, 16.0, (1, 1, 0), 0.2, _ALWAYS, 0, 1.0), 0),
    (_T("data-platform", "StatefulSet", "archive-db", _FR_TEAM, 0, 0, (0, 0, 0), 0, _ALWAYS, 1000), 1),
    (_T("default", "Deployment", "pause-placeholder", None, 0.0, 0.0, (1, 0, 0), 0.0, _ALWAYS), 2),
)  # fmt: skip

if TYPE_CHECKING:
    from castai_focus_dagster.castai.sandbox.clusters import ClusterSpec, SandboxCluster


@dataclass(frozen=True)
class WorkloadParams:
    """Per-workload numeric parameters (one array entry per workload); `take` selects rows."""

    noise_key: np.ndarray  # uint64: identity of the workload in the noise function
    cpu_per_pod: np.ndarray
    ram_gib_per_pod: np.ndarray
    gpu_per_pod: np.ndarray
    base_pods: np.ndarray  # (W, 3) in TIERS order
    diurnal_amplitude: np.ndarray
    peak_hour: np.ndarray
    run_start_hour: np.ndarray  # int64
    run_end_hour: np.ndarray  # int64
    run_minutes: np.ndarray  # int64 minutes per running hour
    run_every_days: np.ndarray  # int64
    run_day_offset: np.ndarray  # int64
    spot_interruption_rate: np.ndarray
    storage_gib: np.ndarray

    def take(self, rows: np.ndarray) -> WorkloadParams:
        return WorkloadParams(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.noise_key)


@dataclass(frozen=True, eq=False)
class Workloads:
    """A cluster's workloads, sorted by (namespace, workloadType, workloadName): the listing order."""

    namespaces: np.ndarray  # object arrays of str, vectorised filtering
    workload_types: np.ndarray
    workload_names: np.ndarray
    labels: tuple[dict[str, str], ...]
    params: WorkloadParams

    def __len__(self) -> int:
        return len(self.workload_names)

    def keys(self) -> list[tuple[str, str, str]]:
        return list(
            zip(
                self.namespaces.tolist(),
                self.workload_types.tolist(),
                self.workload_names.tolist(),
                strict=True,
            )
        )

    def row(self, namespace: str, workload_type: str, workload_name: str) -> int:
        mask = (
            (self.namespaces == namespace)
            & (self.workload_types == workload_type)
            & (self.workload_names == workload_name)
        )
        rows = np.flatnonzero(mask)
        if len(rows) != 1:
            raise KeyError(f"no workload {namespace}/{workload_type}/{workload_name}")
        return int(rows[0])


def model_hourly_metrics(
    cluster: SandboxCluster, p: WorkloadParams, hours: np.ndarray, *, listing: bool = False
) -> dict[str, np.ndarray]:
    hour_of_day, day = hours % 24, hours // 24
    key = p.noise_key[:, None]
    runs_today = (day[None, :] - p.run_day_offset[:, None]) % p.run_every_days[:, None] == 0
    runs_now = (hour_of_day >= p.run_start_hour[:, None]) & (hour_of_day < p.run_end_hour[:, None])
    minutes = np.where(runs_today & runs_now, p.run_minutes[:, None], 0).astype(np.int64)
    diurnal = 1.0 + p.diurnal_amplitude[:, None] * np.sin(
        2 * math.pi * (hour_of_day - p.peak_hour[:, None]) / 24
    )
    daily = 0.9 + 0.2 * noise(key, day[None, :], NOISE_DAY)
    jitter = 0.95 + 0.1 * noise(key, hours[None, :], NOISE_HOUR)
    scale = diurnal * daily * jitter * (minutes / 60.0)
    interrupted = noise(key, hours[None, :], NOISE_SPOT) < p.spot_interruption_rate[:, None]
    moved = np.where(interrupted, 0.5, 0.0) * p.base_pods[:, 1:2]
    pods = {
        "OnDemand": p.base_pods[:, 0:1] * scale,
        "Spot": (p.base_pods[:, 1:2] - moved) * scale,
        "SpotFallback": (p.base_pods[:, 2:3] + moved) * scale,
    }
    spot_ratio = (
        cluster.spot_ratio
        * (0.9 + 0.2 * noise(cluster.noise_key, hours, NOISE_SPOT_PRICE))
        * (0.95 + 0.1 * noise(cluster.noise_key, day, NOISE_SPOT_DAY))
    )
    no_tpu = np.zeros((len(p), len(hours)))
    out: dict[str, np.ndarray] = {}
    for tier in TIERS:
        tier_ratio = spot_ratio if tier == "Spot" else np.ones(len(hours))
        cpu_price = cluster.cpu_hourly_price * tier_ratio
        ram_price = cluster.memory_gib_hourly_price * tier_ratio
        if not listing:
            cpu_price = discounted(cluster, "cpu", tier, cpu_price, hours)
            ram_price = discounted(cluster, "memory", tier, ram_price, hours)
        gpu_price = cluster.gpu_hourly_price * tier_ratio
        tier_pods = pods[tier]
        cpus = tier_pods * p.cpu_per_pod[:, None]
        ram = tier_pods * p.ram_gib_per_pod[:, None]
        gpus = tier_pods * p.gpu_per_pod[:, None]
        out[f"cpuCount{tier}"] = cpus
        out[f"podCount{tier}"] = tier_pods
        out[f"uptimeMinutes{tier}"] = np.where(tier_pods > 0, minutes, 0)
        out[f"cpuCost{tier}"] = cpus * cpu_price[None, :]
        out[f"ramCost{tier}"] = ram * ram_price[None, :]
        out[f"ramGib{tier}"] = ram
        out[f"gpuCost{tier}"] = gpus * gpu_price[None, :]
        out[f"gpuCount{tier}"] = gpus
        out[f"tpuCost{tier}"] = no_tpu
        out[f"tpuCount{tier}"] = no_tpu
    storage_gib = p.storage_gib[:, None] * (0.98 + 0.04 * noise(key, day[None, :], NOISE_STORAGE))
    out["storageGib"] = storage_gib
    out["storageCost"] = storage_gib * cluster.storage_gib_hourly_price
    return out


def build_workloads(
    rng: np.random.Generator, index: int, n_clusters: int, count: int, spec: ClusterSpec
) -> Workloads:
    templates = [TEMPLATES[i % len(TEMPLATES)] for i in range(count)]
    copies = [i // len(TEMPLATES) for i in range(count)]
    for template, cluster_index in SPECIAL_WORKLOADS:
        if cluster_index % n_clusters == index:
            templates.append(template)
            copies.append(0)
    names = [t.name if copy == 0 else f"{t.name}-{copy}" for t, copy in zip(templates, copies, strict=True)]
    order = sorted(range(len(templates)), key=lambda i: (templates[i].namespace, templates[i].kind, names[i]))
    templates = [templates[i] for i in order]
    names = [names[i] for i in order]
    n = len(templates)

    def column(get: Any, dtype: Any = np.float64) -> np.ndarray:
        return np.array([get(t) for t in templates], dtype=dtype)

    every_days = column(lambda t: t.run[3], np.int64)
    base_pods = np.array([t.pods for t in templates], dtype=np.float64)
    spot_pods = base_pods[:, 1] > 0
    params = WorkloadParams(
        noise_key=rng.integers(0, 2**63, size=n).astype(np.uint64),
        cpu_per_pod=column(lambda t: t.cpu) * rng.uniform(0.8, 1.25, n),
        ram_gib_per_pod=column(lambda t: t.ram_gib) * rng.uniform(0.8, 1.25, n),
        gpu_per_pod=column(lambda t: t.gpu),
        base_pods=base_pods,
        diurnal_amplitude=column(lambda t: t.diurnal),
        peak_hour=rng.uniform(9.0, 20.0, n),
        run_start_hour=column(lambda t: t.run[0], np.int64),
        run_end_hour=column(lambda t: t.run[1], np.int64),
        run_minutes=column(lambda t: t.run[2], np.int64),
        run_every_days=every_days,
        run_day_offset=rng.integers(0, every_days),
        spot_interruption_rate=np.where(spot_pods, column(lambda t: t.interruption), 0.0),
        storage_gib=column(lambda t: t.storage_gib) * rng.uniform(0.8, 1.25, n),
    )
    env = spec.tags.get("env", "prod")
    labels = tuple(workload_labels(t, name, env) for t, name in zip(templates, names, strict=True))
    return Workloads(
        namespaces=np.array([t.namespace for t in templates], dtype=object),
        workload_types=np.array([t.kind for t in templates], dtype=object),
        workload_names=np.array(names, dtype=object),
        labels=labels,
        params=params,
    )


def workload_labels(template: WorkloadTemplate, name: str, env: str) -> dict[str, str]:
    """Kubernetes labels; keys with '.' and '/' on purpose, `team` absent on system workloads."""
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": template.namespace,
        "env": env,
        "sandbox.cast.ai/workload-class": "batch" if template.kind in ("Job", "CronJob") else "service",
    }
    if template.team is not None:
        labels["team"] = template.team
    return labels
