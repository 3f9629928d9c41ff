"""The pure core: no I/O, no clock, no randomness. Everything here is tested with plain values."""
