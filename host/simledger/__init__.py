"""The simulated ledger: a real settlement system (its own gRPC process, its own SQLite book)
for tests and the demo, with fault knobs.

Run it with ``python -m host.simledger --db PATH --listen ADDR``; start it from Python with
``host.simledger.process.start_ledger``. The contract is ilphost.simledger.v1.SimLedger.
"""
