"""Every feature's configuration section, registered without importing the feature itself:
the CLI validates the whole file (unknown keys are errors) without loading the server.

Add one line here when a package registers a section with ``register_section``.
"""

import mdm.enroll.config  # noqa: F401 - [enroll], [smtp], [apns]
import mdm.ios.commands_config  # noqa: F401 - [ios_commands]
import mdm.ios.config  # noqa: F401 - [ios]
import mdm.scep.settings  # noqa: F401 - [scep]
