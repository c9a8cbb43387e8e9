"""The control protocol between the daemon and its clients (CLI, tray): framing, address, token, client."""
