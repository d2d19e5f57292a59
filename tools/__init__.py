"""Programs maintainers and users run from a clone, and the parts they are built from.

Not shipped in the wheel or the sdist; tools/README.md lists them.
"""
