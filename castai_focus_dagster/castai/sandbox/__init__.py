"""Cast AI sandbox: a deterministic simulated Cast AI REST API on 127.0.0.1 (`CASTAI_API_URL=sandbox`).

`SandboxOrg` is the synthetic organisation and its exact ground truth, `SandboxServer` serves it
over real HTTP with Cast AI's paths and JSON shapes, `Faults` injects the failures a production
client must survive. Run it standalone with `python -m castai_focus_dagster.castai.sandbox`.
"""

from castai_focus_dagster.castai.sandbox.clusters import SandboxCluster
from castai_focus_dagster.castai.sandbox.faults import CannedResponse, Faults
from castai_focus_dagster.castai.sandbox.org import SandboxOrg
from castai_focus_dagster.castai.sandbox.protocol import RecordedRequest
from castai_focus_dagster.castai.sandbox.server import SandboxServer

__all__ = ["CannedResponse", "Faults", "RecordedRequest", "SandboxCluster", "SandboxOrg", "SandboxServer"]
