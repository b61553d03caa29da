"""`castai-focus-sandbox`: serve a generated organisation until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from castai_focus_dagster.castai.sandbox.org import SandboxOrg
from castai_focus_dagster.castai.sandbox.server import SandboxServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="castai-focus-sandbox",
        description="Serve a simulated Cast AI API on 127.0.0.1 until SIGTERM/SIGINT; prints SANDBOX_URL=... "
        "when ready.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--clusters", type=int, default=6)
    parser.add_argument("--workloads-per-cluster", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prerender-start", help="RFC 3339 start of a window to render before serving")
    parser.add_argument("--prerender-end", help="RFC 3339 end of that window")
    parser.add_argument("--prerender-step", type=int, default=3600, help="bucket seconds of that window")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.prerender_start) != bool(args.prerender_end):
        _parser().error("--prerender-start and --prerender-end go together")
    org = SandboxOrg.generate(
        seed=args.seed, clusters=args.clusters, workloads_per_cluster=args.workloads_per_cluster
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with SandboxServer(org, port=args.port) as server:
        if args.prerender_start:
            server.prerender(args.prerender_start, args.prerender_end, args.prerender_step)
        print(f"SANDBOX_URL={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
