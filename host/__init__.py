"""The Interledger settlement host: adaptor supervision, settlement engine, connector core."""
