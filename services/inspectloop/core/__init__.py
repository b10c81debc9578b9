"""Shared building blocks of every service: settings, errors, bus, blob store, metrics, logging."""
