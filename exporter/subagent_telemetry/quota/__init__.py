"""Quotas: the tracker, concurrency slots and the stores behind them (in memory, Redis + Lua)."""
