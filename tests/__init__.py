"""The test suites: unit/ (pure parts, no root) and integration/ (real labs, as root)."""
