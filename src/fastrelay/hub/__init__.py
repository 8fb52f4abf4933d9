"""This node's channels, presence and fan-out; owned by the event loop, no I/O."""
