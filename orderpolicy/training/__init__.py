"""Training and evaluation loops for the order posterior."""
