"""Policies of KES devices (DESIGN §5): versioned settings documents per administration group, with
locks, inheritance and policy profiles; the effective policy of a device (``seams``)."""
