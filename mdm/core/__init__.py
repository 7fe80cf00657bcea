"""Service layer: platform-neutral operations on devices, commands, events and tokens.

Functions here take an ``AsyncSession`` that the caller owns, so that a state change and the
event reporting it commit together (transactional outbox).
"""
