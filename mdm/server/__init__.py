"""Process runtime: listeners, TLS contexts, middleware, background workers, shutdown."""
