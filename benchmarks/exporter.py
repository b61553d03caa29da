"""Child process of `make bench`: one Dagster materialisation of `focus_export_job` for one day.

Run as `python -m benchmarks.exporter DAY RESULT_JSON` with the exporter's environment (CASTAI_API_URL
pointing at a sandbox process, LOCAL_OUTPUT_DIR, DAGSTER_HOME). It is a process of its own so that its
peak RSS is the exporter's alone: the kernel's high-water mark of this process's memory since `exec`
(`VmHWM`). Not `ru_maxrss`: Linux folds the RSS of the parent at spawn time into the child's
`ru_maxrss`, so a child of the benchmark process would report the benchmark's own memory. It also
writes the profile that explains the figure: wall time and the highest RSS sampled during every step.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.02
_HIGH_WATER_MARK = re.compile(r"^VmHWM:\s+(\d+) kB$", re.MULTILINE)


def peak_rss_mb() -> float:
    """Peak RSS of this process since exec (`VmHWM`); `ru_maxrss` where /proc is unavailable."""
    try:
        match = _HIGH_WATER_MARK.search(Path("/proc/self/status").read_text())
    except OSError:
        match = None
    kilobytes = int(match.group(1)) if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kilobytes / 1024, 1)


class RssSampler:
    """Samples this process's RSS in a background thread, so each step's peak can be attributed."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._process = psutil.Process()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._process.memory_info().rss))
            self._stop.wait(SAMPLE_SECONDS)

    def peak_between(self, start: float, end: float) -> int:
        """Highest sample in [start, end]; for a step shorter than the interval, the sample before it."""
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        before = [rss for moment, rss in self.samples if moment < start][-1:]
        return max(inside or before or [0])


def step_profile(instance: Any, run_id: str, sampler: RssSampler) -> list[dict[str, Any]]:
    """Per step: seconds from STEP_START to its end event and the peak RSS sampled in between."""
    starts: dict[str, float] = {}
    steps: list[dict[str, Any]] = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[record.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and record.step_key in starts:
            start = starts.pop(record.step_key)
            steps.append(
                {
                    "step": record.step_key,
                    "outcome": event.event_type_value,
                    "seconds": round(record.timestamp - start, 3),
                    "peak_rss_mb": round(sampler.peak_between(start, record.timestamp) / 2**20, 1),
                }
            )
    return steps


def main(argv: list[str]) -> int:
    day, result_path = argv
    started = time.perf_counter()
    with RssSampler() as sampler:
        import dagster as dg

        from castai_focus_dagster.definitions import defs

        imported = time.perf_counter()
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def("focus_export_job").execute_in_process(
                partition_key=day, instance=instance, raise_on_error=False
            )
            finished = time.perf_counter()
            steps = step_profile(instance, result.run_id, sampler)
    summary = {
        "success": result.success,
        "import_seconds": round(imported - started, 3),
        "job_seconds": round(finished - imported, 3),
        "peak_rss_mb": peak_rss_mb(),
        "steps": steps,
    }
    Path(result_path).write_text(json.dumps(summary, indent=1))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
