"""Retrieval model: network, losses, mining, training, search and evaluation."""
