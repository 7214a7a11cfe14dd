"""memorization package."""
