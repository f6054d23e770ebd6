"""propensity: raw transactions in, a monitored purchase-propensity model out (see the README's module map)."""
