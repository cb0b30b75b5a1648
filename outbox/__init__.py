"""The ``outbox`` command line: the one place where every process is wired."""
