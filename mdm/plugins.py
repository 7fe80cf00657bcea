"""Imports every feature package's registrations (routes, hooks, workers, config sections).

Add one line here when a new package plugs into the runtime.
"""

import mdm.api.plugin  # noqa: F401 - registers the admin API on the admin listener
