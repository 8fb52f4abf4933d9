"""Sans-I/O Pusher semantics: no sockets, no clock, no awaits."""
