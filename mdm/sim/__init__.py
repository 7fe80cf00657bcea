"""A simulated iOS device: enrolls from a published profile, checks in, polls and answers commands
the way a real device does. Used by the end-to-end tests and as the load generator of ``mdm bench``."""
