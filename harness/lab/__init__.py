"""The lab: a shelf (or several hosts) of boards named in a user's lab file,
used one process at a time, validated in parallel.

`labfile` reads lab.yaml, `lock` holds a board for one process, `run` builds,
flashes and validates every selected instance, `check` says what each one is
and holds now, `report` writes the boards × models matrix, `labgrid` reaches
boards that sit on other hosts through a labgrid coordinator.
"""
