"""Collectors: one file per collector, each registered with `@register_collector`."""
