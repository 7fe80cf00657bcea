"""Policy tables (filled in by the policies work of issue 13)."""
