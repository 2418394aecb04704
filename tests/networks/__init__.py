"""Tests of the network family; each network subclasses :class:`.network_contract.NetworkContract`."""
