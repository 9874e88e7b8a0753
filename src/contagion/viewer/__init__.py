"""The transcript viewer: browse a run's games, filter them, and read each player's conversation."""

from contagion.viewer.page import ViewerServer, write_viewer

__all__ = ["ViewerServer", "write_viewer"]
