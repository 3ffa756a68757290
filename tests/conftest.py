"""Shared test setup."""

import os

# Before anything imports grpc: see host/__init__.py (tests start supervisors in-process).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
