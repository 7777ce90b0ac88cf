"""Evidence an agent presents about its host, verified against trust anchors held in tenant settings."""
