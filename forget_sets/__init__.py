"""forget_sets package."""
