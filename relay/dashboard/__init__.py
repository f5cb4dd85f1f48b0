"""The operator dashboard (/dashboard): routes, sessions and HTML."""
