"""Tests of the Ethereum adaptor on a real anvil node."""
