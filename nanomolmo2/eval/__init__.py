"""Evaluation: Molmo2's metrics, batched generation, the evaluation runner and pictures of points.

- metrics.py     pointing F1, counting, VQA and video pointing on plain Python / numpy data
- generation.py  batched, left-padded generation with the KV cache
- evaluate.py    held-out questions -> answers -> metrics (with blank-image variants)
- draw.py        points, masks and captions drawn on images
- commands.py    `nanomolmo2 generate` and `nanomolmo2 eval`
"""
