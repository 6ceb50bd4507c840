"""Simulated Signal Service, Execution Gateway and market-data API for demos, tests and benchmarks.

`Sandbox` serves all three on loopback ports with injectable `SandboxFaults`; `SandboxState`
holds their prices, positions and orders (optionally persisted between processes).
"""

from orchestrator_cli.sandbox.server import Sandbox
from orchestrator_cli.sandbox.state import SandboxFaults, SandboxState

__all__ = ["Sandbox", "SandboxFaults", "SandboxState"]
