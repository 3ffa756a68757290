"""SDK for ledger adaptors of the Interledger settlement host.

An adaptor serves the ``ilphost.adaptor.v1.LedgerAdaptor`` gRPC service; the generated
messages and stubs are under ``sdk.pb``; the contract's constants are in ``sdk.contract``.
"""
