"""Adaptation methods. Each module registers one method into ``METHODS``."""
