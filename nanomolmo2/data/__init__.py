"""Data: media + text -> model inputs -> training batches.

- tokenizer.py            Qwen3's tokenizer with Molmo2's special tokens
- image_preprocessing.py  crops, resizing, patches and pooling windows of one image (and of video frames)
- video_io.py             Molmo2's frame sampling and decoding only the sampled frames
- processor.py            text with <|image|> / <|video|> markers + media -> input tensors (as transformers')
- points.py               Molmo2's point / count / track text format, written and parsed
- chat.py                 the chat layout shared by training examples and generation prompts
- examples.py             one image (or video) with its conversations -> tokens, labels, loss weights
- jsonl.py                reading the JSONL dataset rows
- datasets.py             JSONL rows -> examples with Molmo2's prompts and answers, per task
- vocabulary.py           the answer tokens of a dataset (for a restricted output head)
- mixture.py              group rates and sqrt-size sampling of datasets, as a resumable stream
- packing.py              padding and packing examples into fixed-length rows
- loader.py               the training stream: workers load and tokenise, a background thread packs and pins
"""
