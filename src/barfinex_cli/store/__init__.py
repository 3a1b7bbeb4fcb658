"""Durable state in SQLite: the audit log of every event (with the recorder that fills it from the
bus) and the other records a role must keep across restarts.

Everything here is synchronous SQLite behind small classes; roles and the CLI use them, and nothing
here imports a role.
"""
