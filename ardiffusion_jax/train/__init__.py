"""Training: state, sharding, checkpoints and the train loops."""
