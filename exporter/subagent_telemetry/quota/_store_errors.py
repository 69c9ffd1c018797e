"""Errors of a shared quota store (no Redis import: agent code catches these without the extra)."""

from __future__ import annotations

from .._errors import ConfigError, QuotaExceeded
from .._vocab import ErrorType, Resource


class QuotaStoreUnavailable(QuotaExceeded):
    """The shared quota store could not be reached and its failure policy refused the execution.

    A ``QuotaExceeded``: code that handles refusals handles this one too. ``store`` is the store's
    address (without credentials), ``policy`` the ``quota.failure_policy`` that decided.
    """

    resource = Resource.EXECUTIONS
    heading = "Quota store unavailable"
    config_key = "quota.failure_policy"
    error_type = ErrorType.QUOTA_EXCEEDED

    def __init__(self, store: str, policy: str, reason: str) -> None:
        self.store = store
        self.policy = policy
        self.reason = reason
        self.used = 0
        self.limit = 0
        hint = (
            "the local allowance is spent"
            if policy == "local_allowance"
            else "admission is refused while the store is down"
        )
        msg = (
            f"{self.heading}: {store} ({reason}); quota.failure_policy={policy}: {hint}. "
            "Check the store, or choose another quota.failure_policy."
        )
        Exception.__init__(self, msg)


class QuotaLimitsMismatchError(ConfigError):
    """This process's limits differ from those pinned in the shared store for the same session."""
