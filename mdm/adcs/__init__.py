"""AD CS web enrollment (certsrv): the ``adcs`` certificate source, with enroll-on-behalf-of
through an Enrollment Agent certificate (DESIGN §7, ``docs/PKI.md``)."""
