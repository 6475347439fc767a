"""Training: losses, optimisation schedules and solvers for the codec and the language model."""
