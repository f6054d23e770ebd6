"""Monitoring: drift detectors (drift venv), the window they read, the policy, the report and calibration."""
