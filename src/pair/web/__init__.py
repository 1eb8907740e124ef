"""HTTP foundation: app factory, auth dependencies, error mapping."""
