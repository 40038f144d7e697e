"""Local control API of a running node (server) and the CLI client for it."""
