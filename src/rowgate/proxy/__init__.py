"""The only package that touches sockets: listeners, sessions, upstream connections."""
