"""The Interledger settlement host: adaptor supervision, settlement engine, connector core."""

import os

# The supervisor forks adaptors (preexec_fn sets the parent-death signal) from a process full of
# gRPC threads. With gRPC's fork support on, the forked child runs gRPC's at-fork handlers and
# sometimes aborts before it can exec (observed: about 1 spawn in 12 killed by SIGSEGV/SIGABRT
# under load). The children exec at once and need none of it. gRPC reads this variable when it
# is first imported, and importing any host module runs this first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
