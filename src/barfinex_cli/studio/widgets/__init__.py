"""Studio widgets: display only (IO lives in the app's workers)."""
