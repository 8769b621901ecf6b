"""Running the study: training (`fit`, no Ray), the sweep's Tune wiring, the budget, final seeds."""
