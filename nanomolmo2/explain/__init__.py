"""`nanomolmo2 explain`: a guided tour of one forward pass, stage by stage, with pictures.

- walk.py      runs one image or video through the real pipeline and records every stage (shapes, meaning)
- pictures.py  draws the crops, the pooling windows, the token layout and the attention masks (PIL)
- command.py   `nanomolmo2 explain`: prints the stages and writes the pictures
"""
