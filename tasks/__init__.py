"""Task plugins. Each module registers its tasks into ``harness.registry.TASKS`` on import."""
