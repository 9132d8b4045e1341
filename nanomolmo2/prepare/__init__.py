"""Preparing public datasets: Hugging Face tables (PixMo, Molmo2, tulu) -> the project's JSONL, media fetched.

- tables.py    reading parquet / JSONL tables, shared row helpers
- images.py    PixMo and multi-image converters
- videos.py    Molmo2-VideoPoint converter
- download.py  a safe, resumable media downloader
- command.py   `nanomolmo2 prepare`
"""
