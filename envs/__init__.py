"""torchrl environments for MDM decoding."""
