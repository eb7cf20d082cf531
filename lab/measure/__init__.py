"""Measured failover: trial analysis (pure), the trial runner, timeline plots."""
