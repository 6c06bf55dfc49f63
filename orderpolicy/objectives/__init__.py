"""ELBO objectives for the order posterior: the environment path and the direct paper path."""
