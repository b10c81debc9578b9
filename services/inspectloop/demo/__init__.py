"""The plant-story demo: timeline recording and the end-of-run report."""
