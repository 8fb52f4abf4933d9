"""The I/O shell: the only package that imports asyncio and uvloop."""
