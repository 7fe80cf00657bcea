"""Enrollment: one-time links to signed iOS enrollment profiles, QR codes, e-mail delivery."""
