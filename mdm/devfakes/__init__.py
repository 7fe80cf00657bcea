"""Contract fakes of outside services (development, tests and benchmarks only): they speak the
documented wire protocol and errors of the real service so that the clients are tested against
real sockets. Nothing in the server imports this package."""
