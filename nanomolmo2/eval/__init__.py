"""Using a model: Molmo2's metrics, generation, conversations, the evaluation runner and pictures of points.

- metrics.py        pointing F1, counting, VQA and video pointing on plain Python / numpy data
- generation.py     batched, left-padded generation with the KV cache
- screened_head.py  exact greedy decoding through an int8 copy of the output head (CPU speed-up)
- conversation.py   multi-turn conversations about images or a video, answers streamed
- loading.py        a checkpoint (folder or cached Hub id) opened on its device and dtype
- evaluate.py       held-out questions -> answers -> metrics (with blank-image variants)
- draw.py           points, masks and captions drawn on images
- commands.py       `nanomolmo2 generate` and `nanomolmo2 eval`; chat.py: `nanomolmo2 chat`
"""
