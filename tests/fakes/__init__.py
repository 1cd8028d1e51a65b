"""Scripted stand-ins for the remote services executors talk to (model APIs)."""
