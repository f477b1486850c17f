"""Helpers only tests import (never a test file, never bench/ or the
product): `fakes` (a fake device session for validate tests; tiny models are in harness.testing.models, built once per test
process) and `firmware_build` (host builds of the firmware). Fakes that are
part of the product live in the product (`harness.device.sim`)."""
