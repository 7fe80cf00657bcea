"""The ``mdm`` command line."""
