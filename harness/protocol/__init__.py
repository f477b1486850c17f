"""The wire protocol (docs/protocol.md): `codec` (pure, bytes in and out) and
`session` (the host's client over any pyserial URL)."""
