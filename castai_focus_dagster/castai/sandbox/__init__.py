"""Cast AI sandbox: a deterministic simulated Cast AI REST API on 127.0.0.1 (`CASTAI_API_URL=sandbox`).

`SandboxOrg` is the synthetic organisation and its exact ground truth, `SandboxServer` serves it
over real HTTP with Cast AI's paths and JSON shapes, `Faults` injects the failures a production
client must survive. Run it standalone with `python -m castai_focus_dagster.castai.sandbox.server`.
"""

from typing import TYPE_CHECKING, Any

from castai_focus_dagster.castai.sandbox.faults import CannedResponse, Faults
from castai_focus_dagster.castai.sandbox.org import SandboxCluster, SandboxOrg

if TYPE_CHECKING:
    from castai_focus_dagster.castai.sandbox.server import RecordedRequest, SandboxServer

__all__ = ["CannedResponse", "Faults", "RecordedRequest", "SandboxCluster", "SandboxOrg", "SandboxServer"]


def __getattr__(name: str) -> Any:
    """The server module loads on first use, so `python -m castai_focus_dagster.castai.sandbox.server`
    does not find it already imported by the package (runpy warns about that)."""
    if name in ("RecordedRequest", "SandboxServer"):
        from castai_focus_dagster.castai.sandbox import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
