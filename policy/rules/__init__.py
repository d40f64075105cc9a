"""The rules, pure functions of their arguments: no file, socket or directory."""
