"""Imports every feature package's registrations (routes, hooks, workers, config sections).

Add one line here when a new package plugs into the runtime.
"""

import mdm.api.plugin
import mdm.enroll.plugin  # enrollment links, profiles, mail
import mdm.ios.commands_plugin
import mdm.ios.plugin
import mdm.pki.plugin
import mdm.scep.plugin  # noqa: F401 - SCEP server on the iOS listener, challenges
