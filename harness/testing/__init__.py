"""Fakes and rigs that are part of the product, as pyserial ships `loop://`:
tiny models made on the fly (`models`) and a local lab of simulated boards,
optionally behind a real labgrid coordinator on 127.0.0.1 (`lab`). The test
suite and `bench/` use them; a lab can use them to try its own set-up."""
