"""Pretraining the tiny model's parts: its language model on text, its vision encoder on images with their text."""
