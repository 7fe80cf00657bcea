"""Exchange ActiveSync devices managed through Exchange Management Shell cmdlets (DESIGN §8)."""
