"""Every side effect of implflow: executors, workspaces, notifications."""

from activities.phases import ImplActivities

__all__ = ["ImplActivities"]
