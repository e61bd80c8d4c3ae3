"""Sans-IO PostgreSQL protocol 3.0: bytes in, typed messages out, and back.

Nothing in this package touches sockets or asyncio; the proxy session drives it.
"""
