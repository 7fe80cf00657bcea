"""Imports every feature package's registrations (routes, hooks, workers, config sections).

Add one line here when a new package plugs into the runtime.
"""

import mdm.api.plugin
import mdm.enroll.plugin  # enrollment links, profiles, mail
import mdm.pki.plugin  # noqa: F401 - certificate source and client-certificate verifier
import mdm.ios.plugin  # noqa: F401 - iOS check-in and command channel (after pki: uses its verifier)
import mdm.scep.plugin  # noqa: F401 - SCEP server on the iOS listener, challenges
import mdm.ios.commands_plugin  # noqa: F401 - iOS command translator (library -> Apple commands)
