"""The rollout controller: metric-driven shadow, canary, promotion and rollback."""
