"""Backbone plugins. Each module registers into ``harness.registry.BACKBONES`` on import."""
