"""The offline dress rehearsal of the real training path (`make rehearsal`): run.py."""
