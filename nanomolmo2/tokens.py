"""Token ids that the model, the data pipeline and the checkpoint formats must agree on, in one place.

Qwen3's vocabulary has 151,936 rows (the output head covers exactly these). Molmo2 puts its own special
tokens right after them, at ids 151,936 and up, in 128 extra embedding rows (docs/MOLMO2.md, "Tokens").
Qwen3 has no BOS token: Molmo2 starts every sequence with `<|im_end|>` instead.
"""

from __future__ import annotations

QWEN3_VOCAB_SIZE = 151936  # rows of Qwen3's embedding table and of the output head
MOLMO2_EXTRA_ROWS = 128  # embedding rows after QWEN3_VOCAB_SIZE that hold Molmo2's special tokens

# Qwen3's own special tokens.
PAD_TOKEN, PAD_ID = "<|endoftext|>", 151643  # fills padded positions
IM_START_TOKEN, IM_START_ID = "<|im_start|>", 151644  # opens a chat turn
IM_END_TOKEN, IM_END_ID = "<|im_end|>", 151645  # closes a chat turn: the stop token, and Molmo2's BOS for Qwen
BOS_TOKEN, BOS_ID = IM_END_TOKEN, IM_END_ID

# Molmo2's special tokens, in id order from MOLMO2_FIRST_ID.
MOLMO2_SPECIAL_TOKENS = (
    "<im_start>",
    "<im_end>",
    "<im_patch>",
    "<im_col>",
    "<low_res_im_start>",
    "<|image|>",
    "<im_low>",
    "<frame_start>",
    "<frame_end>",
    "<|video|>",
)
MOLMO2_FIRST_ID = QWEN3_VOCAB_SIZE
IMAGE_START_ID = 151936  # <im_start>: opens the high-resolution crops of an image
IMAGE_END_ID = 151937  # <im_end>: closes the low- and high-resolution parts
IMAGE_PATCH_ID = 151938  # <im_patch>: one slot per vision token; the connector's output is added here
IMAGE_COL_ID = 151939  # <im_col>: ends a row of high-resolution patches
LOW_RES_IMAGE_START_ID = 151940  # <low_res_im_start>: opens the global (low-resolution) crop
IMAGE_MARKER, VIDEO_MARKER = "<|image|>", "<|video|>"  # where a prompt's media go (151941, 151945)
IM_LOW_ID = 151942  # <im_low>
FRAME_START_ID = 151943  # <frame_start>
FRAME_END_ID = 151944  # <frame_end>

# Every token of an image or frame block (mm_token_type_ids = 1): they attend to each other in both directions.
VISION_TOKEN_IDS = (
    IMAGE_PATCH_ID,
    IMAGE_COL_ID,
    IMAGE_START_ID,
    LOW_RES_IMAGE_START_ID,
    FRAME_START_ID,
    IMAGE_END_ID,
    FRAME_END_ID,
    IM_LOW_ID,
)

IGNORE_INDEX = -100  # label of a position without loss (the Hugging Face convention)
