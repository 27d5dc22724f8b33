"""Security: passwords, tokens, authentication, rate limits and the audit trail."""
