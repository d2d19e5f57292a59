"""Collectors: one file per collector, each registered with `@register_collector`.

A collector reads another's data only through its typed key in a snapshot, never by
importing its module (tests/test_collector_imports.py).
"""
