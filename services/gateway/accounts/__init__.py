"""The accounts wing: tenants, users and roles, sign-in, single sign-on and API tokens, with their pure rules and their store."""
