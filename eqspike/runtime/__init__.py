"""What a run needs around the model: devices, torchrun, the Hub, safe files, progress, optimisers."""
