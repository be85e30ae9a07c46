"""Helpers shared by tests that start several processes."""

import socket


def free_port() -> int:
  """A TCP port that was free a moment ago (for a jax.distributed coordinator on localhost)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]
