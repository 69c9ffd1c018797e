"""Tools for humans, wired by the CLI: the demo agent, the no-Docker stack and its alert log."""
