"""``ilp-host demo`` and the tooling around it: the two-host harness (twohost) the demo, the
tests and the benchmarks share, the in-tree adaptors it runs (adaptors), and the Ethereum
variant's local chain (ethereum, anvil)."""
