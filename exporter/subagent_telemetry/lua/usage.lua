-- A consistent read of the session's usage on the server's clock. Writes nothing.
-- Reply: {'ok', executions, tokens, reserved, elapsed_ms, active}
return usage_reply('ok', now_ms())
