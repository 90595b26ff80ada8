"""CLI command groups: each module has `register(app)`; plumbing in `service.commands.common`."""
