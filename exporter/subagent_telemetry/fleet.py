"""Running a fleet: the shared-store errors, Prometheus multiprocess mode and Pushgateway batch runs.

See docs/fleet.md. ``RedisQuotaStore`` is selected by ``quota.store: redis://…`` (it needs the
``redis`` extra) and is importable from ``subagent_telemetry.quota._redis_store`` for injection in tests.
"""

from .backends._multiprocess import (
    child_exit,
    mark_process_dead,
    multiprocess_registry,
    prepare_multiprocess_dir,
)
from .backends._pushgateway import BatchPush, push_on_exit
from .quota._store_errors import QuotaLimitsMismatchError, QuotaStoreUnavailable

__all__ = [
    "BatchPush",
    "QuotaLimitsMismatchError",
    "QuotaStoreUnavailable",
    "child_exit",
    "mark_process_dead",
    "multiprocess_registry",
    "prepare_multiprocess_dir",
    "push_on_exit",
]
