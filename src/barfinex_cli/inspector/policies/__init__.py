"""Risk policies: the policy file, its loader and watcher, and one module per policy family.

Each family (`sizing`, `market`, `exposure`, `drawdown`, `activity`, `windows`, `hold`) holds
small pure evaluators over the inspector's value types; `ALL_POLICIES` is the order the governor
runs them in (on a tie in strictness the earlier one names the verdict).
"""

from __future__ import annotations

from barfinex_cli.inspector.policies import activity, drawdown, exposure, market, windows
from barfinex_cli.inspector.policies.base import Context, Outcome, Policy
from barfinex_cli.inspector.policies.loading import (
    PolicySet,
    default_policy_path,
    load_policies,
    parse_policies,
)
from barfinex_cli.inspector.policies.watcher import PolicyReload, PolicyWatcher

ALL_POLICIES: tuple[Policy, ...] = (
    *drawdown.POLICIES,
    *activity.POLICIES,
    *market.POLICIES,
    *windows.POLICIES,
    *exposure.POLICIES,
)

__all__ = [
    "ALL_POLICIES",
    "Context",
    "Outcome",
    "Policy",
    "PolicyReload",
    "PolicySet",
    "PolicyWatcher",
    "default_policy_path",
    "load_policies",
    "parse_policies",
]
