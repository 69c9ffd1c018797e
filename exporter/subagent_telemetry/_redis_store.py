"""Redis-backed shared quota store (placeholder until the fleet issue lands)."""

from __future__ import annotations

from typing import Any


class RedisQuotaStore:
    @classmethod
    def from_config(cls, config: Any) -> RedisQuotaStore:
        msg = "the Redis quota store is not available yet"
        raise NotImplementedError(msg)
