"""The tray icon: another process, and only a control client of the daemon (never imports its internals)."""
