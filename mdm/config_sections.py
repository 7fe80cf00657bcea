"""Every feature's configuration section, registered without importing the feature itself:
the CLI validates the whole file (unknown keys are errors) without loading the server.

Add one line here when a package registers a section with ``register_section``.
"""

import mdm.enroll.config
import mdm.ios.commands_config
import mdm.ios.config
import mdm.scep.settings  # noqa: F401 - [scep]
