"""The transcript viewer: browse a run's games, filter them, and read each player's conversation."""

from contagion.viewer.page import VIEWER_FILE, ViewerServer, write_viewer

__all__ = ["VIEWER_FILE", "ViewerServer", "write_viewer"]
