"""The teacher: the store of fine-tuned teachers, their targets, and the cache of those targets."""
