"""Studio screens, one per key 1-6: each draws from the studio state and does no IO itself."""
