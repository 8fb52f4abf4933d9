"""Bytes to objects and back: WebSocket frames, the upgrade handshake, Pusher JSON."""
