"""Users, tokens, permissions."""
